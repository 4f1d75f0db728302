/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient along every axis but the last of a dense
 * array (inner > 1): each vector is a column of the (outer, n, inner) view,
 * read 8 adjacent columns at a time.  The operator's rule, the accumulation
 * modes and the rescue are described in normalize_common.h.
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* Load up to 8 adjacent values (w of them, zeros after) as ACC. */
static C2O_ACC8 c2o_load_block(__global const C2O_STORAGE *p, const ulong e, const uint w)
{
    if (w == 8) {
        return C2O_LOAD8_ACC(p, e);
    }
    ACC t[8] = {(ACC)0, (ACC)0, (ACC)0, (ACC)0, (ACC)0, (ACC)0, (ACC)0, (ACC)0};
    for (uint j = 0; j < w; ++j) {
        t[j] = C2O_LOAD_ACC(p, e + j);
    }
    return (C2O_ACC8)(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
}

/* Store the first w of 8 values (already in C2O_VALUE). */
static void c2o_store_block(__global C2O_STORAGE *p, const ulong e, const uint w, const C2O_VALUE8 v)
{
    if (w == 8) {
        C2O_STORE8(p, e, v);
        return;
    }
    C2O_VALUE t[8];
    vstore8(v, 0, t);
    for (uint j = 0; j < w; ++j) {
        C2O_STORE(p, e + j, t[j]);
    }
}

/* Width (1..8) of chunk c (8 adjacent vectors) of a row of `inner` vectors. */
#define C2O_CHUNK_WIDTH(c, inner) ((uint)min((ulong)8, (inner) - (c) * 8))

/* Chunks of 8 adjacent vectors handled by one work item of the columns kernels:
 * 1 on GPUs (adjacent work items read adjacent chunks: coalesced), up to
 * C2O_COLUMN_STRIP on CPU devices, where a work item walks down its strip row
 * by row as the CPU kernel does (sequential memory, few pages per row). */
#ifndef C2O_COLUMN_STRIP
#  define C2O_COLUMN_STRIP 1
#endif

/* Work item `item` of a columns kernel: its row o, first chunk c0 and chunk count m. */
static void c2o_strip(const ulong item, const ulong inner, const uint per_item, ulong *o, ulong *c0, uint *m)
{
    const ulong chunks = (inner + 7) / 8;
    const ulong items_per_row = (chunks + per_item - 1) / per_item;
    *o = item / items_per_row;
    *c0 = (item - *o * items_per_row) * per_item;
    *m = (uint)min((ulong)per_item, chunks - *c0);
}

/* The scales of a block of w (<= 8) adjacent columns p[k * inner + l], l < w,
 * whose sums of squares are (hi, lo); the rare columns that need it are rescued
 * by a serial pass of their own. */
static C2O_ACC8 c2o_block_scales(const C2O_ACC8 hi, const C2O_ACC8 lo, __global const C2O_STORAGE *p,
                                 const ulong n, const ulong inner, const uint w,
                                 const int use_max_norm, const ACC norm)
{
    ACC h[8], l[8], s[8];
    vstore8(hi, 0, h);
    vstore8(lo, 0, l);
#pragma unroll
    for (uint j = 0; j < 8; ++j) {
        if (j < w && C2O_NEEDS_RESCUE(h[j] + l[j])) {
            s[j] = c2o_serial_rescued_scale(p + j, n, inner, use_max_norm, norm);
        } else {
            s[j] = c2o_scale(h[j], l[j], use_max_norm, norm);
        }
    }
    return vload8(0, s);
}

/* A work item per strip of `per_item` (<= C2O_COLUMN_STRIP) chunks of 8 adjacent
 * vectors; n_items = outer * ceil(ceil(inner / 8) / per_item).  Four rows per
 * sweep, each vector summed down k in one fixed order. */
__kernel void caffe2op_normalize_columns_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    const ulong n_items, const ulong n, const ulong inner, const uint per_item,
    const int use_max_norm, const ACC norm, const int in_place)
{
    const ulong item = get_global_id(0);
    if (item >= n_items) {
        return;
    }
    ulong o, c0;
    uint m;
    c2o_strip(item, inner, per_item, &o, &c0, &m);
    __global const C2O_STORAGE *xb = x + x_offset + o * n * inner + c0 * 8;
    __global C2O_STORAGE *yb = y + y_offset + o * n * inner + c0 * 8;
    const uint last = C2O_CHUNK_WIDTH(c0 + m - 1, inner); /* only the last chunk may be narrower */
    C2O_ACC8 acc[C2O_COLUMN_STRIP];
#if C2O_COMP
    C2O_ACC8 acc_lo[C2O_COLUMN_STRIP];
#endif
    for (uint j = 0; j < m; ++j) {
        acc[j] = (C2O_ACC8)((ACC)0);
#if C2O_COMP
        acc_lo[j] = (C2O_ACC8)((ACC)0);
#endif
    }
    ulong k = 0;
    for (; k + 4 <= n; k += 4) {
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            const ulong e = k * inner + j * 8;
            const C2O_ACC8 a0 = c2o_load_block(xb, e, w);
            const C2O_ACC8 a1 = c2o_load_block(xb, e + inner, w);
            const C2O_ACC8 a2 = c2o_load_block(xb, e + 2 * inner, w);
            const C2O_ACC8 a3 = c2o_load_block(xb, e + 3 * inner, w);
            C2O_ACCUM_SQ4(C2O_ACC8, acc[j], acc_lo[j], a0, a1, a2, a3);
        }
    }
    for (; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const C2O_ACC8 a0 = c2o_load_block(xb, k * inner + j * 8, j + 1 == m ? last : 8u);
            C2O_ACCUM_SQ(C2O_ACC8, acc[j], acc_lo[j], a0);
        }
    }
    int untouched = in_place;
    for (uint j = 0; j < m; ++j) {
#if C2O_COMP
        const C2O_ACC8 lo = acc_lo[j];
#else
        const C2O_ACC8 lo = (C2O_ACC8)((ACC)0);
#endif
        acc[j] = c2o_block_scales(acc[j], lo, xb + j * 8, n, inner, j + 1 == m ? last : 8u, use_max_norm, norm);
        untouched = untouched && all(acc[j] == (C2O_ACC8)((ACC)1));
    }
    if (untouched) {
        return; /* in place with every scale 1: nothing to write */
    }
    for (k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const ulong e = k * inner + j * 8;
            const C2O_VALUE8 s = C2O_TO_VALUE8(acc[j]);
            if (j + 1 < m || last == 8) {
                C2O_STORE8(yb, e, C2O_LOAD8(xb, e) * s);
            } else {
                c2o_store_block(yb, e, last, C2O_TO_VALUE8(c2o_load_block(xb, e, last)) * s);
            }
        }
    }
}

/* A work item per strip of chunks of 8 adjacent vectors (see caffe2op_normalize_columns_fwd). */
__kernel void caffe2op_normalize_columns_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset,
    const ulong n_items, const ulong n, const ulong inner, const uint per_item)
{
    const ulong item = get_global_id(0);
    if (item >= n_items) {
        return;
    }
    ulong o, c0;
    uint m;
    c2o_strip(item, inner, per_item, &o, &c0, &m);
    const ulong base = o * n * inner + c0 * 8;
    __global const C2O_STORAGE *xb = x + x_offset + base;
    __global const C2O_STORAGE *dyb = dy + dy_offset + base;
    __global C2O_STORAGE *dxb = dx + dx_offset + base;
    const uint last = C2O_CHUNK_WIDTH(c0 + m - 1, inner);
    C2O_ACC8 axx[C2O_COLUMN_STRIP];
    C2O_ACC8 axy[C2O_COLUMN_STRIP];
#if C2O_COMP
    C2O_ACC8 axx_lo[C2O_COLUMN_STRIP];
    C2O_ACC8 axy_lo[C2O_COLUMN_STRIP];
#endif
    for (uint j = 0; j < m; ++j) {
        axx[j] = (C2O_ACC8)((ACC)0);
        axy[j] = (C2O_ACC8)((ACC)0);
#if C2O_COMP
        axx_lo[j] = (C2O_ACC8)((ACC)0);
        axy_lo[j] = (C2O_ACC8)((ACC)0);
#endif
    }
    for (ulong k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            const ulong e = k * inner + j * 8;
            const C2O_ACC8 a = c2o_load_block(xb, e, w);
            const C2O_ACC8 d = c2o_load_block(dyb, e, w);
            C2O_ACCUM_SQ(C2O_ACC8, axx[j], axx_lo[j], a);
            C2O_ACCUM_PROD(C2O_ACC8, axy[j], axy_lo[j], a, d);
        }
    }
    for (uint j = 0; j < m; ++j) {
        ACC fa[8], fb[8], xx[8], xy[8], xx_lo[8], xy_lo[8];
        vstore8(axx[j], 0, xx);
        vstore8(axy[j], 0, xy);
#if C2O_COMP
        vstore8(axx_lo[j], 0, xx_lo);
        vstore8(axy_lo[j], 0, xy_lo);
#else
        vstore8((C2O_ACC8)((ACC)0), 0, xx_lo);
        vstore8((C2O_ACC8)((ACC)0), 0, xy_lo);
#endif
        const uint w = j + 1 == m ? last : 8u;
#pragma unroll
        for (uint l = 0; l < 8; ++l) {
            if (C2O_GRAD_RESCUE && l < w && C2O_NEEDS_RESCUE(xx[l] + xx_lo[l])) {
                c2o_serial_rescued_grad(xb + j * 8 + l, dyb + j * 8 + l, n, inner, &fa[l], &fb[l]);
            } else {
                c2o_grad_factors(xx[l], xx_lo[l], xy[l], xy_lo[l], 0, &fa[l], &fb[l]);
            }
        }
        axx[j] = vload8(0, fa);
        axy[j] = vload8(0, fb);
    }
    for (ulong k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            const ulong e = k * inner + j * 8;
            const C2O_ACC8 r = c2o_load_block(dyb, e, w) * axx[j] - c2o_load_block(xb, e, w) * axy[j];
            c2o_store_block(dxb, e, w, C2O_TO_VALUE8(r));
        }
    }
}
