/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient kernels that reduce one vector per
 * work-group (dense arrays along their last axis, the stored segments of a
 * sparse matrix) and the grouped sparse kernel.  The operator's rule, the
 * accumulation modes, the rescue and the canonical reduction order are
 * described in normalize_common.h; the columns kernels (every other axis)
 * are in normalize_columns.cl.
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* ------------------------------------------------------------ dense forward */

/* A work-group per vector; vectors v = (o, i) with o = v / inner, i = v % inner.
 * partial: 8 ACC values per work item (16 in compensated mode). */
__kernel void caffe2op_normalize_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    const ulong n_vectors, const ulong n, const ulong inner,
    const int use_max_norm, const ACC norm, const int in_place, __local ACC *partial)
{
    for (ulong v = get_group_id(0); v < n_vectors; v += get_num_groups(0)) {
        const ulong o = v / inner;
        const ulong base = o * n * inner + (v - o * inner);
        __global const C2O_STORAGE *xv = x + x_offset + base;
        const ACC scale = c2o_group_vector_scale(xv, n, inner, use_max_norm, norm, partial);
        if (!(in_place && scale == (ACC)1)) {
            c2o_item_scale(xv, y + y_offset + base, n, inner, (C2O_VALUE)scale);
        }
    }
}

/* A work-group per vector: dx = dy * a - x * b (computed in ACC, rounded once). */
__kernel void caffe2op_normalize_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset,
    const ulong n_vectors, const ulong n, const ulong inner, __local ACC *partial)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    for (ulong v = get_group_id(0); v < n_vectors; v += get_num_groups(0)) {
        const ulong o = v / inner;
        const ulong base = o * n * inner + (v - o * inner);
        __global const C2O_STORAGE *xv = x + x_offset + base;
        __global const C2O_STORAGE *dyv = dy + dy_offset + base;
        __global C2O_STORAGE *dxv = dx + dx_offset + base;
        ACC xx_hi, xx_lo, xy_hi, xy_lo, a, b;
        c2o_vector_dot(xv, xv, 1, n, inner, 0, partial, &xx_hi, &xx_lo);
        c2o_vector_dot(xv, dyv, 0, n, inner, 0, partial, &xy_hi, &xy_lo);
        if (C2O_GRAD_RESCUE && C2O_NEEDS_RESCUE(xx_hi + xx_lo)) {
            /* Rare: every item measures the vector again on its own, in the serial order of the
             * columns kernel (no barrier under this branch: PoCL's compiler rejects one there). */
            c2o_serial_rescued_grad(xv, dyv, n, inner, &a, &b);
        } else {
            c2o_grad_factors(xx_hi, xx_lo, xy_hi, xy_lo, 0, &a, &b);
        }
        const ulong full = n / 8;
        if (inner == 1) {
            for (ulong c = lid; c < full; c += wg) {
                const C2O_ACC8 r = C2O_LOAD8_ACC(dyv, c * 8) * a - C2O_LOAD8_ACC(xv, c * 8) * b;
                C2O_STORE8(dxv, c * 8, C2O_TO_VALUE8(r));
            }
        } else {
            for (ulong c = lid; c < full; c += wg) {
                for (int j = 0; j < 8; ++j) {
                    const ulong k = (c * 8 + j) * inner;
                    C2O_STORE(dxv, k, (C2O_VALUE)(C2O_LOAD_ACC(dyv, k) * a - C2O_LOAD_ACC(xv, k) * b));
                }
            }
        }
        if (lid == full % wg) {
            for (ulong k = full * 8; k < n; ++k) {
                const ulong i = k * inner;
                C2O_STORE(dxv, i, (C2O_VALUE)(C2O_LOAD_ACC(dyv, i) * a - C2O_LOAD_ACC(xv, i) * b));
            }
        }
    }
}

/* ------------------------------------------------------------------- sparse */

/* A work-group per stored segment data[indptr[s] .. indptr[s + 1]) (no duplicate entries). */
__kernel void caffe2op_normalize_segments_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    __global const PTR_T *indptr, const ulong indptr_offset, const ulong n_segments,
    const int use_max_norm, const ACC norm, const int in_place, __local ACC *partial)
{
    for (ulong s = get_group_id(0); s < n_segments; s += get_num_groups(0)) {
        const ulong begin = (ulong)indptr[indptr_offset + s];
        const ulong n = (ulong)indptr[indptr_offset + s + 1] - begin;
        __global const C2O_STORAGE *xs = x + x_offset + begin;
        const ACC scale = c2o_group_vector_scale(xs, n, 1, use_max_norm, norm, partial);
        if (!(in_place && scale == (ACC)1)) {
            c2o_item_scale(xs, y + y_offset + begin, n, 1, (C2O_VALUE)scale);
        }
    }
}

/* Sum of squares of the vector data[order[p]], p in [begin, end), values
 * scaled by 2^-e; with has_keys, each run of equal keys[p] (duplicates) is
 * added up before it is squared. */
static void c2o_grouped_sumsq(__global const C2O_STORAGE *x, __global const long *order,
                              __global const long *keys, const int has_keys, const ulong begin, const ulong end,
                              const int e, ACC *hi, ACC *lo)
{
    ACC h = (ACC)0;
    ACC l = (ACC)0;
    if (has_keys) {
        ulong p = begin;
        while (p < end) {
            const long key = keys[p];
            ACC run = ldexp(C2O_LOAD_ACC(x, (ulong)order[p]), -e);
            for (++p; p < end && keys[p] == key; ++p) {
                run += ldexp(C2O_LOAD_ACC(x, (ulong)order[p]), -e);
            }
            C2O_ACCUM_SQ(ACC, h, l, run);
        }
    } else {
        for (ulong p = begin; p < end; ++p) {
            const ACC a = ldexp(C2O_LOAD_ACC(x, (ulong)order[p]), -e);
            C2O_ACCUM_SQ(ACC, h, l, a);
        }
    }
    *hi = h;
    *lo = C2O_COMP ? l : (ACC)0;
}

/* A work item per vector v: entries data[order[p]], p in [vptr[v], vptr[v + 1]).
 * With has_keys, adjacent entries with equal keys[p] are duplicates: each run
 * is added up before it is squared. */
__kernel void caffe2op_normalize_grouped_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    __global const long *order, __global const long *vptr, __global const long *keys, const int has_keys,
    const ulong n_vectors, const int use_max_norm, const ACC norm, const int in_place)
{
    const ulong v = get_global_id(0);
    if (v >= n_vectors) {
        return;
    }
    const ulong begin = (ulong)vptr[v];
    const ulong end = (ulong)vptr[v + 1];
    __global const C2O_STORAGE *xs = x + x_offset;
    ACC hi, lo, scale;
    c2o_grouped_sumsq(xs, order, keys, has_keys, begin, end, 0, &hi, &lo);
    if (!C2O_NEEDS_RESCUE(hi + lo)) {
        scale = c2o_scale(hi, lo, use_max_norm, norm);
    } else {
        /* The largest stored magnitude bounds the vector's (duplicates are summed after scaling). */
        ACC amax = (ACC)0;
        for (ulong p = begin; p < end; ++p) {
            amax = c2o_max_nan(amax, fabs(C2O_LOAD_ACC(xs, (ulong)order[p])));
        }
        const int e = c2o_rescue_exponent(amax);
        if (e == 0) {
            scale = c2o_scale_of_norm(amax, use_max_norm, norm);
        } else {
            c2o_grouped_sumsq(xs, order, keys, has_keys, begin, end, e, &hi, &lo);
            scale = c2o_scale_split(hi, lo, e, use_max_norm, norm);
        }
    }
    if (in_place && scale == (ACC)1) {
        return;
    }
    const C2O_VALUE s = (C2O_VALUE)scale;
    for (ulong p = begin; p < end; ++p) {
        const ulong e = (ulong)order[p];
        C2O_STORE(y, y_offset + e, (C2O_VALUE)C2O_LOAD(x, x_offset + e) * s);
    }
}
