/* The scalar paths: "generic" (portable C: without a popcount instruction the compiler's
 * __builtin_popcountll is a library routine, so it runs on any CPU) and, on x86-64, "scalar" (the
 * same code with the hardware POPCNT instruction, run only where the CPU reports it). */
#include <string.h>

#include "kernels.h"

#define SCALAR(name) generic_##name
#define SCALAR_TARGET
#define REAL SCALAR
#define REAL_TARGET SCALAR_TARGET
#include "scalar_body.h"
#include "real_body.h"
#undef SCALAR
#undef SCALAR_TARGET
#undef REAL
#undef REAL_TARGET

const struct kernel_table generic_kernels = {
    "generic", generic_stem, generic_binary, generic_pool, generic_counts, generic_least, generic_stem_real, generic_shortcut, generic_signs,
};

#ifdef POINTDISTILL_X86_KERNELS
#define SCALAR(name) scalar_##name
#define SCALAR_TARGET __attribute__((target("popcnt")))
#define REAL SCALAR
#define REAL_TARGET SCALAR_TARGET
#include "scalar_body.h"
#include "real_body.h"
#undef SCALAR
#undef SCALAR_TARGET
#undef REAL
#undef REAL_TARGET

const struct kernel_table scalar_kernels = {
    "scalar", scalar_stem, scalar_binary, scalar_pool, scalar_counts, scalar_least, scalar_stem_real, scalar_shortcut, scalar_signs,
};
#endif
