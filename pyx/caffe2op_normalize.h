/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Contiguous-vector kernels of Normalize (used by _normalize_vectors.pxi):
 * the sum of squares of a vector in Normalize's fixed order, and the
 * scaling of a vector, for float32, float64 and float16 (bit patterns,
 * computed in float32: F16C's conversions round exactly like
 * caffe2op_cpu.h's).  Compiled once per CPU variant (setup.py); every
 * variant computes exactly the same bits.
 *
 * The order of a sum of squares (float64 squares of float32 or float64
 * values; the float32 squares of float16 values, which are exact): lane t (t < 8) adds the squares of elements 8c + t of every full
 * chunk c of 8, in increasing c; the elements of the last, partial chunk are
 * then added to lane 0 one by one; the lanes are added as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
 *
 * Why AVX-512 has its own path: sparse rows are often ~10 values long, and
 * the portable loops' trip counts (full chunks, tail, vectorised scaling
 * and its epilogue) change from one vector to the next, so every vector
 * costs several branch mispredictions.  With masked loads and stores the
 * tail is a fixed sequence: masked-off elements are loaded as +0.0, and
 * adding +0.0 to a sum of squares (never -0.0) changes no bit, so the tail
 * always adds 7 values to lane 0 and the result is that of the portable
 * loop.  Masked-off elements are never read or written (AVX-512 masked
 * accesses do not fault).
 */
#ifndef CAFFE2OP_NORMALIZE_H
#define CAFFE2OP_NORMALIZE_H

#include <stddef.h>
#include <stdint.h>

#include "caffe2op_cpu.h"

#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>
#define C2O_NORMALIZE_AVX512 1
#else
#define C2O_NORMALIZE_AVX512 0
#endif

static inline double c2o_normalize_lanes(const double *l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#if C2O_NORMALIZE_AVX512
/* Lanes `acc` plus the tail squares `tail` (zero past the vector) added to lane 0 in order. */
static inline double c2o_normalize_finish(__m512d acc, __m512d tail) {
    double l[8], t[8];
    _mm512_storeu_pd(l, acc);
    _mm512_storeu_pd(t, tail);
    l[0] = ((((((l[0] + t[0]) + t[1]) + t[2]) + t[3]) + t[4]) + t[5]) + t[6];
    return c2o_normalize_lanes(l);
}
#endif

static inline double c2o_normalize_sumsq_f32(const float *x, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    /* The first full chunk (if any) is loaded under a mask too: a vector under 16 values
     * runs no loop at all.  Its squares start the lanes (0 + a square is that square). */
    const ptrdiff_t head = n >= 8 ? 8 : 0;
    __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps((__mmask8)(head ? 0xffu : 0u), x));
    __m512d acc = _mm512_mul_pd(v, v);
    for (j = head; j + 8 <= n; j += 8) {
        v = _mm512_cvtps_pd(_mm256_loadu_ps(x + j));
        acc = _mm512_add_pd(acc, _mm512_mul_pd(v, v));
    }
    v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps((__mmask8)((1u << (n - j)) - 1u), x + j));
    return c2o_normalize_finish(acc, _mm512_mul_pd(v, v));
#else
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; j + 8 <= n; j += 8)
        for (int t = 0; t < 8; t++) l[t] += (double)x[j + t] * (double)x[j + t];
    for (; j < n; j++) l[0] += (double)x[j] * (double)x[j];
    return c2o_normalize_lanes(l);
#endif
}

static inline double c2o_normalize_sumsq_f64(const double *x, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    const ptrdiff_t head = n >= 8 ? 8 : 0; /* as in c2o_normalize_sumsq_f32 */
    __m512d v = _mm512_maskz_loadu_pd((__mmask8)(head ? 0xffu : 0u), x);
    __m512d acc = _mm512_mul_pd(v, v);
    for (j = head; j + 8 <= n; j += 8) {
        v = _mm512_loadu_pd(x + j);
        acc = _mm512_add_pd(acc, _mm512_mul_pd(v, v));
    }
    v = _mm512_maskz_loadu_pd((__mmask8)((1u << (n - j)) - 1u), x + j);
    return c2o_normalize_finish(acc, _mm512_mul_pd(v, v));
#else
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; j + 8 <= n; j += 8)
        for (int t = 0; t < 8; t++) l[t] += x[j + t] * x[j + t];
    for (; j < n; j++) l[0] += x[j] * x[j];
    return c2o_normalize_lanes(l);
#endif
}

static inline double c2o_normalize_sumsq_f16(const uint16_t *x, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    const ptrdiff_t head = n >= 8 ? 8 : 0; /* as in c2o_normalize_sumsq_f32 */
    __m256 h = _mm256_cvtph_ps(_mm_maskz_loadu_epi16((__mmask8)(head ? 0xffu : 0u), x));
    __m512d acc = _mm512_cvtps_pd(_mm256_mul_ps(h, h));
    for (j = head; j + 8 <= n; j += 8) {
        h = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_mul_ps(h, h)));
    }
    h = _mm256_cvtph_ps(_mm_maskz_loadu_epi16((__mmask8)((1u << (n - j)) - 1u), x + j));
    return c2o_normalize_finish(acc, _mm512_cvtps_pd(_mm256_mul_ps(h, h)));
#else
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float h;
    for (; j + 8 <= n; j += 8)
        for (int t = 0; t < 8; t++) {
            h = c2o_half_to_float(x[j + t]);
            l[t] += (double)(h * h);
        }
    for (; j < n; j++) {
        h = c2o_half_to_float(x[j]);
        l[0] += (double)(h * h);
    }
    return c2o_normalize_lanes(l);
#endif
}

/* y[0:n] = x[0:n] * s (float32 product of float32 values). */
static inline void c2o_normalize_scale_f32(const float *x, float *y, ptrdiff_t n, float s) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    const __m512 vs = _mm512_set1_ps(s);
    __mmask16 m;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), vs));
    m = (__mmask16)((1u << (n - j)) - 1u);
    _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vs));
#else
    for (; j < n; j++) y[j] = x[j] * s;
#endif
}

/* y[0:n] = x[0:n] * s (float64). */
static inline void c2o_normalize_scale_f64(const double *x, double *y, ptrdiff_t n, double s) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    const __m512d vs = _mm512_set1_pd(s);
    __mmask8 m;
    for (; j + 8 <= n; j += 8) _mm512_storeu_pd(y + j, _mm512_mul_pd(_mm512_loadu_pd(x + j), vs));
    m = (__mmask8)((1u << (n - j)) - 1u);
    _mm512_mask_storeu_pd(y + j, m, _mm512_mul_pd(_mm512_maskz_loadu_pd(m, x + j), vs));
#else
    for (; j < n; j++) y[j] = x[j] * s;
#endif
}

/* y[0:n] = x[0:n] * s for float16 bit patterns (float32 product, rounded to nearest even). */
static inline void c2o_normalize_scale_f16(const uint16_t *x, uint16_t *y, ptrdiff_t n, float s) {
    ptrdiff_t j = 0;
#if C2O_NORMALIZE_AVX512
    const __m512 vs = _mm512_set1_ps(s);
    __mmask16 m;
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i *)(y + j),
                            _mm512_cvtps_ph(_mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + j))), vs),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    m = (__mmask16)((1u << (n - j)) - 1u);
    _mm256_mask_storeu_epi16(
        y + j, m,
        _mm512_cvtps_ph(_mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + j)), vs),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    for (; j < n; j++) y[j] = c2o_float_to_half(c2o_half_to_float(x[j]) * s);
#endif
}

/* The scaling across the compressed direction (CSR columns, CSC rows):
 * y[k] = x[k] * scales[index[k]] for k < n, every index already checked.
 * AVX-512 gathers the scales 16 (float32) or 8 (float64) at a time, and the
 * tail under a mask; the products are those of the scalar loop, whose
 * compiled form loads one scale at a time (measured on 10^6 float32 values
 * with int32 indices, 2 threads, caches flushed: 460-560 us against
 * 580-750 us).
 *
 * With `stream`, the vector stores are non-temporal (from y's first 64-byte
 * boundary on; the values before it take ordinary stores): a large new
 * output is not read back by the kernel, and ordinary stores would first
 * read every line of it (write-allocate).  Measured on 10^6 float32 values
 * with int32 indices into a fresh output: 424 -> 359 us with 2 threads,
 * 861 -> 645 us with 1.  Other variants ignore `stream`. */
#if C2O_NORMALIZE_AVX512
/* How many leading elements of y take ordinary stores: up to its first 64-byte
 * boundary when streaming (all n when y is not even element-aligned), else 0. */
static inline ptrdiff_t c2o_stream_head(const void *y, size_t element, ptrdiff_t n, int stream) {
    if (!stream) return 0;
    const uintptr_t misalignment = (uintptr_t)y & 63;
    if (misalignment % element) return n;
    const ptrdiff_t head = (ptrdiff_t)(((64 - misalignment) & 63) / element);
    return head < n ? head : n;
}

/* Each variant below gives one whole vector (`_vector`, LANES values) and a
 * shorter run under a mask (`_masked`, fewer than LANES); C2O_GATHER_SCALE_DRIVER
 * makes the function over n values from them: ordinary stores up to y's
 * first 64-byte boundary when streaming, whole vectors, the masked tail. */
#define C2O_GATHER_SCALE_DRIVER(NAME, I, T, LANES)                                                           \
    static inline void NAME(const I *index, const T *x, T *y, const T *scales, ptrdiff_t n, int stream) {    \
        ptrdiff_t k = c2o_stream_head(y, sizeof(T), n, stream);                                           \
        if (k) NAME(index, x, y, scales, k, 0);                                                           \
        for (; k + (LANES) <= n; k += (LANES)) NAME##_vector(index + k, x + k, y + k, scales, stream);    \
        if (k < n) NAME##_masked(index + k, x + k, y + k, scales, n - k);                                 \
        if (stream) _mm_sfence(); /* streaming stores are weakly ordered: publish them */                 \
    }

static inline void c2o_gather_scale_f32_i32_vector(const int32_t *index, const float *x, float *y,
                                                   const float *scales, int stream) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_i32gather_ps(_mm512_loadu_si512(index), scales, 4));
    if (stream) _mm512_stream_ps(y, v);
    else _mm512_storeu_ps(y, v);
}

static inline void c2o_gather_scale_f32_i32_masked(const int32_t *index, const float *x, float *y,
                                                   const float *scales, ptrdiff_t count) {
    const __mmask16 m = (__mmask16)((1u << count) - 1u);
    const __m512 s = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_maskz_loadu_epi32(m, index), scales, 4);
    _mm512_mask_storeu_ps(y, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x), s));
}

static inline void c2o_gather_scale_f32_i64_vector(const int64_t *index, const float *x, float *y,
                                                   const float *scales, int stream) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), _mm512_i64gather_ps(_mm512_loadu_si512(index), scales, 4));
    if (stream) _mm256_stream_ps(y, v);
    else _mm256_storeu_ps(y, v);
}

static inline void c2o_gather_scale_f32_i64_masked(const int64_t *index, const float *x, float *y,
                                                   const float *scales, ptrdiff_t count) {
    const __mmask8 m = (__mmask8)((1u << count) - 1u);
    const __m256 s = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), m, _mm512_maskz_loadu_epi64(m, index), scales, 4);
    _mm256_mask_storeu_ps(y, m, _mm256_mul_ps(_mm256_maskz_loadu_ps(m, x), s));
}

static inline void c2o_gather_scale_f64_i32_vector(const int32_t *index, const double *x, double *y,
                                                   const double *scales, int stream) {
    const __m512d v =
        _mm512_mul_pd(_mm512_loadu_pd(x), _mm512_i32gather_pd(_mm256_loadu_si256((const __m256i *)index), scales, 8));
    if (stream) _mm512_stream_pd(y, v);
    else _mm512_storeu_pd(y, v);
}

static inline void c2o_gather_scale_f64_i32_masked(const int32_t *index, const double *x, double *y,
                                                   const double *scales, ptrdiff_t count) {
    const __mmask8 m = (__mmask8)((1u << count) - 1u);
    const __m512d s = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, _mm256_maskz_loadu_epi32(m, index), scales, 8);
    _mm512_mask_storeu_pd(y, m, _mm512_mul_pd(_mm512_maskz_loadu_pd(m, x), s));
}

static inline void c2o_gather_scale_f64_i64_vector(const int64_t *index, const double *x, double *y,
                                                   const double *scales, int stream) {
    const __m512d v = _mm512_mul_pd(_mm512_loadu_pd(x), _mm512_i64gather_pd(_mm512_loadu_si512(index), scales, 8));
    if (stream) _mm512_stream_pd(y, v);
    else _mm512_storeu_pd(y, v);
}

static inline void c2o_gather_scale_f64_i64_masked(const int64_t *index, const double *x, double *y,
                                                   const double *scales, ptrdiff_t count) {
    const __mmask8 m = (__mmask8)((1u << count) - 1u);
    const __m512d s = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), m, _mm512_maskz_loadu_epi64(m, index), scales, 8);
    _mm512_mask_storeu_pd(y, m, _mm512_mul_pd(_mm512_maskz_loadu_pd(m, x), s));
}

C2O_GATHER_SCALE_DRIVER(c2o_gather_scale_f32_i32, int32_t, float, 16)
C2O_GATHER_SCALE_DRIVER(c2o_gather_scale_f32_i64, int64_t, float, 8)
C2O_GATHER_SCALE_DRIVER(c2o_gather_scale_f64_i32, int32_t, double, 8)
C2O_GATHER_SCALE_DRIVER(c2o_gather_scale_f64_i64, int64_t, double, 8)
#undef C2O_GATHER_SCALE_DRIVER
#else
#define C2O_GATHER_SCALE(NAME, I, T)                                                                    \
    static inline void NAME(const I *index, const T *x, T *y, const T *scales, ptrdiff_t n, int stream) { \
        (void)stream;                                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) y[k] = x[k] * scales[index[k]];                                 \
    }
C2O_GATHER_SCALE(c2o_gather_scale_f32_i32, int32_t, float)
C2O_GATHER_SCALE(c2o_gather_scale_f32_i64, int64_t, float)
C2O_GATHER_SCALE(c2o_gather_scale_f64_i32, int32_t, double)
C2O_GATHER_SCALE(c2o_gather_scale_f64_i64, int64_t, double)
#undef C2O_GATHER_SCALE
#endif

#endif /* CAFFE2OP_NORMALIZE_H */
