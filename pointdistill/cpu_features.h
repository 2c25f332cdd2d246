/* Run-time CPU feature checks shared by pointdistill's C extensions (engine and training kernels). */
#ifndef POINTDISTILL_CPU_FEATURES_H
#define POINTDISTILL_CPU_FEATURES_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

/* AVX-512 F + BW + VPOPCNTDQ: what the 512-bit popcount kernels use. */
static inline int cpu_has_avx512(void) {
#if HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

/* AVX2 with the POPCNT and FMA instructions (every AVX2 CPU has both): what the 256-bit training
 * kernels use. */
static inline int cpu_has_avx2(void) {
#if HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* The POPCNT instruction. */
static inline int cpu_has_popcnt(void) {
#if HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

#endif
