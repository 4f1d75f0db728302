/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Row kernels of SparseNormalize, and the small bit helpers of its
 * de-duplication.  The same source is compiled once per CPU variant (see
 * setup.py); every variant computes exactly the same bits:
 *   - sums of squares use 8 lanes (lane q takes elements q, q+8, ...) and one
 *     fixed reduction tree, so vector units of any width give the same sum;
 *   - no FMA contraction (-ffp-contract=off) and no -ffast-math;
 *   - float16 goes through F16C when the variant has it, whose conversions
 *     round exactly like the portable ones in caffe2op_cpu.h.
 */
#ifndef CAFFE2OP_ROWS_H
#define CAFFE2OP_ROWS_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe2op_cpu.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define C2O_HAVE_F16C 1
#else
#define C2O_HAVE_F16C 0
#endif

/* Caffe2's epsilon: rows are scaled by norm / (||row|| + C2O_EPS). */
#define C2O_EPS 1e-12

/* A float64 sum of squares below this may have lost digits to underflow
 * (its largest square is then below 2^-860, near the subnormals); above
 * DBL_MAX it overflowed.  Those rare rows are measured again, scaled. */
#define C2O_SUMSQ_TINY 0x1p-900

static inline double c2o_reduce8d(const double *l) {
    return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

static inline float c2o_reduce8f(const float *l) {
    return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

static inline double c2o_sumsq_f32(const float *x, ptrdiff_t n) {
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int q = 0; q < 8; q++) l[q] += (double)x[j + q] * (double)x[j + q];
    for (int q = 0; j + q < n; q++) l[q] += (double)x[j + q] * (double)x[j + q];
    return c2o_reduce8d(l);
}

static inline double c2o_sumsq_f64(const double *x, ptrdiff_t n) {
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int q = 0; q < 8; q++) l[q] += x[j + q] * x[j + q];
    for (int q = 0; j + q < n; q++) l[q] += x[j + q] * x[j + q];
    return c2o_reduce8d(l);
}

/* float16 rows accumulate in float32, as Caffe2's Float16SparseNormalize did
 * (no overflow or underflow is possible: 65504^2 * 2^40 < FLT_MAX). */
static inline float c2o_sumsq_f16(const uint16_t *x, ptrdiff_t n) {
    float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t j = 0;
#if C2O_HAVE_F16C
    __m256 acc = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    _mm256_storeu_ps(l, acc);
#else
    for (; j + 8 <= n; j += 8)
        for (int q = 0; q < 8; q++) {
            float v = c2o_half_to_float(x[j + q]);
            l[q] += v * v;
        }
#endif
    for (int q = 0; j + q < n; q++) {
        float v = c2o_half_to_float(x[j + q]);
        l[q] += v * v;
    }
    return c2o_reduce8f(l);
}

static inline void c2o_scale_f32(float *x, ptrdiff_t n, double scale) {
    for (ptrdiff_t j = 0; j < n; j++) x[j] = (float)(x[j] * scale);
}

static inline void c2o_scale_f64(double *x, ptrdiff_t n, double scale) {
    for (ptrdiff_t j = 0; j < n; j++) x[j] = x[j] * scale;
}

static inline void c2o_scale_f16(uint16_t *x, ptrdiff_t n, float scale) {
    ptrdiff_t j = 0;
#if C2O_HAVE_F16C
    const __m256 s = _mm256_set1_ps(scale);
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        _mm_storeu_si128((__m128i *)(x + j), _mm256_cvtps_ph(_mm256_mul_ps(v, s), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; j < n; j++) x[j] = c2o_float_to_half(c2o_half_to_float(x[j]) * scale);
}

/* The rare float64 row whose plain sum of squares overflowed or underflowed:
 * its elements are scaled by 2^-e, where 2^e bounds the largest magnitude,
 * so the norm is r * 2^e with r in [0.5, sqrt(n)] computed without loss. */
static void c2o_normalize_row_f64_scaled(double *x, ptrdiff_t n, int use_max_norm, double norm) {
    double m = 0, l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int e;
    for (ptrdiff_t j = 0; j < n; j++) {
        double a = fabs(x[j]);
        if (a > m) m = a;
    }
    if (m == 0) return; /* a zero row stays zero */
    if (!isfinite(m)) {  /* an infinite element: as the plain formula (scale 0) */
        if (!use_max_norm || norm < m) c2o_scale_f64(x, n, norm / (m + C2O_EPS));
        return;
    }
    frexp(m, &e);
    for (ptrdiff_t j = 0; j < n; j++) {
        double v = ldexp(x[j], -e);
        l[j & 7] += v * v;
    }
    const double r = sqrt(c2o_reduce8d(l));
    const double row_norm = ldexp(r, e); /* may be inf when the elements are not */
    if (use_max_norm && row_norm <= norm) return;
    if (e > 0) {
        /* x * norm / (r 2^e + eps) = (x 2^-e) * norm / (r + eps 2^-e): no overflow. */
        const double scale = norm / (r + ldexp(C2O_EPS, -e));
        for (ptrdiff_t j = 0; j < n; j++) x[j] = ldexp(x[j], -e) * scale;
    } else {
        c2o_scale_f64(x, n, norm / (row_norm + C2O_EPS));
    }
}

/* Normalising a row is split in two: its sum of squares (c2o_sumsq_*), then
 * the decision and the scaling from that sum (c2o_finish_row_*), so that the
 * float64 rows whose plain sum over- or underflowed take the rescaled path
 * from the same sum. */
static inline void c2o_finish_row_f32(float *x, ptrdiff_t n, double sumsq, int use_max_norm, double norm) {
    const double row_norm = sqrt(sumsq);
    /* A zero row stays zero (Caffe2 multiplied it by norm/eps: 0 unless it overflows). */
    if ((use_max_norm && row_norm <= norm) || row_norm == 0) return;
    c2o_scale_f32(x, n, norm / (row_norm + C2O_EPS));
}

static inline void c2o_finish_row_f64(double *x, ptrdiff_t n, double sumsq, int use_max_norm, double norm) {
    if (sumsq < C2O_SUMSQ_TINY || sumsq > DBL_MAX) { /* NaN sums take the plain path */
        c2o_normalize_row_f64_scaled(x, n, use_max_norm, norm);
        return;
    }
    const double row_norm = sqrt(sumsq);
    if (use_max_norm && row_norm <= norm) return;
    c2o_scale_f64(x, n, norm / (row_norm + C2O_EPS));
}

static inline void c2o_finish_row_f16(uint16_t *x, ptrdiff_t n, float sumsq, int use_max_norm, double norm) {
    const float row_norm = sqrtf(sumsq);
    if ((use_max_norm && row_norm <= (float)norm) || row_norm == 0) return;
    c2o_scale_f16(x, n, (float)norm / (row_norm + (float)C2O_EPS));
}

/* --- de-duplication helpers ---------------------------------------------- */

/* Read an index exactly once (another thread may be writing the caller's
 * array): the value checked is the value used, never a second load. */
#if defined(__GNUC__) || defined(__clang__)
static inline int64_t c2o_load_once_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline int64_t c2o_load_once_i32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
#else
static inline int64_t c2o_load_once_i64(const int64_t *p) { return *(const volatile int64_t *)p; }
static inline int64_t c2o_load_once_i32(const int32_t *p) { return *(const volatile int32_t *)p; }
#endif

static inline void c2o_atomic_or_u64(uint64_t *word, uint64_t bits) {
#if defined(__GNUC__) || defined(__clang__)
    if ((*word & bits) != bits) __atomic_fetch_or(word, bits, __ATOMIC_RELAXED);
#else
#pragma omp atomic
    *word |= bits;
#endif
}

static inline int c2o_popcount_u64(uint64_t w) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(w);
#else
    int c = 0;
    for (; w; w &= w - 1) c++;
    return c;
#endif
}

static inline int c2o_ctz_u64(uint64_t w) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(w);
#else
    int c = 0;
    while (!(w & 1)) { w >>= 1; c++; }
    return c;
#endif
}

/* Mark indices[0..k) in the seen-rows bitmap, reading each index once (another
 * thread may be writing them: the value checked is the value used).  Returns 0,
 * or 1 at the first index outside [0, n_rows), with the bitmap partly marked
 * (the caller frees it: the table is untouched). */
static inline int c2o_mark_rows_i64(const int64_t *indices, ptrdiff_t k, int64_t n_rows, uint64_t *seen) {
    for (ptrdiff_t i = 0; i < k; i++) {
        const int64_t row = c2o_load_once_i64(indices + i);
        if ((uint64_t)row >= (uint64_t)n_rows) return 1;
        seen[row >> 6] |= (uint64_t)1 << (row & 63);
    }
    return 0;
}

static inline int c2o_mark_rows_i32(const int32_t *indices, ptrdiff_t k, int64_t n_rows, uint64_t *seen) {
    for (ptrdiff_t i = 0; i < k; i++) {
        const int64_t row = c2o_load_once_i32(indices + i);
        if ((uint64_t)row >= (uint64_t)n_rows) return 1;
        seen[row >> 6] |= (uint64_t)1 << (row & 63);
    }
    return 0;
}

/* The positions of the set bits of seen[start..stop) into rows, ascending; returns how many. */
static inline ptrdiff_t c2o_list_bits(const uint64_t *seen, ptrdiff_t start, ptrdiff_t stop, int64_t *rows) {
    ptrdiff_t count = 0;
    for (ptrdiff_t w = start; w < stop; w++) {
        uint64_t bits = seen[w];
        while (bits) {
            rows[count++] = ((int64_t)w << 6) + c2o_ctz_u64(bits);
            bits &= bits - 1;
        }
    }
    return count;
}

#endif /* CAFFE2OP_ROWS_H */
