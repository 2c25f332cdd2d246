/* The scalar paths: "generic" (portable C: without a popcount instruction the compiler's
 * __builtin_popcountll is a library routine, so it runs on any CPU) and, on x86-64, "scalar" (the
 * same code with the hardware POPCNT instruction, run only where the CPU reports it). */
#include <string.h>

#include "kernels.h"

#define SCALAR(name) generic_##name
#define SCALAR_TARGET
#include "scalar_body.h"
#undef SCALAR
#undef SCALAR_TARGET

const struct kernel_table generic_kernels = {
    "generic", generic_stem, generic_binary, generic_pool, generic_counts,
};

#ifdef POINTDISTILL_X86_KERNELS
#define SCALAR(name) scalar_##name
#define SCALAR_TARGET __attribute__((target("popcnt")))
#include "scalar_body.h"
#undef SCALAR
#undef SCALAR_TARGET

const struct kernel_table scalar_kernels = {
    "scalar", scalar_stem, scalar_binary, scalar_pool, scalar_counts,
};
#endif
