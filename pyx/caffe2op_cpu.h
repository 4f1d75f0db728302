/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Small C helpers shared by the Cython kernels of caffe2op:
 *   - IEEE binary16 <-> binary32 conversion done with float arithmetic on the
 *     bit patterns (exact round-to-nearest-even, subnormals, inf and NaN), so
 *     float16 tables work on any CPU and compiler without _Float16 or F16C;
 *   - OpenMP shims, so that a build without OpenMP compiles and runs serially.
 *
 * The float16 conversions need IEEE float arithmetic in round-to-nearest mode
 * without flush-to-zero: never build this file with -ffast-math.
 */
#ifndef CAFFE2OP_CPU_H
#define CAFFE2OP_CPU_H

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define CAFFE2OP_HAVE_OPENMP 1
#else
#define CAFFE2OP_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif

/* Hint that *p will be written soon.  Random rows of a large table miss the
 * cache; asking for the next rows while the current one is processed overlaps
 * those misses instead of paying them one after another. */
#if defined(__GNUC__) || defined(__clang__)
#define c2o_prefetch(p) __builtin_prefetch((const void *)(p), 1, 3)
#else
#define c2o_prefetch(p) ((void)(p))
#endif

/* CPU variant support, read with cpuid (and xgetbv: the OS must save the
 * wide registers).  1: AVX2 + FMA + F16C; 2: those and AVX-512 F/BW/VL/DQ. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static inline int c2o_cpu_supports_variant(int variant) {
    unsigned a, b, c, d, xcr0_lo, xcr0_hi;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) return 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0x6) != 0x6) return 0; /* SSE and AVX state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1;
    if (variant == 1) return avx2;
    if (variant == 2) {
        const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        return avx2 && f && dq && bw && vl && (xcr0_lo & 0xE0) == 0xE0; /* opmask and zmm state */
    }
    return 0;
}
#else
static inline int c2o_cpu_supports_variant(int variant) { (void)variant; return 0; }
#endif

static inline float c2o_bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t c2o_float_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* binary16 -> binary32.  Normal halves: move exponent and mantissa into place
 * and rescale the exponent bias with one multiplication by 2^-112.  Subnormal
 * halves: build the float 0.5 + m * 2^-24 (exactly representable) and subtract
 * 0.5, which leaves m * 2^-24 exactly.  Inf/NaN come out of the normal path
 * because the multiplication keeps an all-ones exponent all ones. */
static inline float c2o_half_to_float(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w; /* drops the sign bit */
    const uint32_t exp_offset = 0xE0u << 23;
    const float normal = c2o_bits_to_float((two_w >> 4) + exp_offset) * 0x1.0p-112f;
    const float subnormal = c2o_bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t magnitude =
        two_w < (1u << 27) ? c2o_float_to_bits(subnormal) : c2o_float_to_bits(normal);
    return c2o_bits_to_float(sign | magnitude);
}

/* binary32 -> binary16, round to nearest even.  Scaling |f| up by 2^112 and
 * down by 2^-110 turns values too large for half into inf.  Adding a power of
 * two chosen from the exponent makes the float adder round the mantissa at
 * exactly the bit position binary16 keeps (or at the subnormal position for
 * small values); the rounded exponent and mantissa are then read off the sum. */
static inline uint16_t c2o_float_to_half(float f) {
    float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = c2o_float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) {
        bias = 0x71000000u;
    }
    base = c2o_bits_to_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = c2o_float_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

#endif /* CAFFE2OP_CPU_H */
