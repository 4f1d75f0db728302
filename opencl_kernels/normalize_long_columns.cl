/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient along every axis but the last for long
 * columns: n > 16 * block rows (block = 4,096 rows, so n > 65,536; the
 * test-only CAFFE2OP_OPENCL_LIMITS key long_column_block lowers the block).
 * Shorter columns keep normalize_columns.cl's order; these kernels run for
 * every long column on every device and launch shape, so the bits are the
 * same across devices' limits (issue 16 item 9).  The rule, the
 * accumulation modes and the rescue are normalize_common.h's.
 *
 * Canonical order of a long column's sum (of squares; backward also of
 * x * dy), fixed by n (and the block) alone:
 *   1. the rows are cut into nb = ceil(n / block) blocks of `block` rows
 *      (the last one shorter); block b has 8 partials, partial r adding its
 *      rows k = r (mod 8) in increasing k (normalize_columns.cl's order
 *      restricted to the block; block is a multiple of 8);
 *   2. lane by lane (r), block b goes to slot b mod 32, each slot adding
 *      its blocks in increasing b (C2O_ACCUM: (hi, lo) pairs in compensated
 *      mode), then the slots in the interleaved tree (slot g += slot g + h
 *      for h = 16, 8, 4, 2, 1; empty slots, g + h >= nb, are never added);
 *   3. slot 0's 8 lanes in c2o_sum8's tree.
 * A column needing the rescue is measured again serially, as elsewhere.
 *
 * Three launches per call, with a scratch buffer cached per queue
 * (caffe2op/ops/normalize/long_columns_opencl.py):
 *   caffe2op_normalize_long_columns_sums_fwd / _bwd: a work item per (outer o, block b,
 *     residue r, column), adjacent items on adjacent columns (coalesced
 *     loads: a warp reads 128 B of a row), 4 loads in flight per item;
 *     its partial (hi, lo; backward also x * dy) goes to scratch at item
 *     index ((o * nb + b) * 8 + r) * inner + column (coalesced writes).
 *   caffe2op_normalize_long_columns_reduce_fwd / _bwd: a work-group per column
 *     (groups loop over the columns): steps 2 and 3 in place in the scratch
 *     (global memory, barrier(CLK_GLOBAL_MEM_FENCE) between tree levels: any
 *     work-group size >= 1 computes the same additions), then item 0 the
 *     scale (c2o_scale or the rescue; backward the factors) into scratch.
 *   caffe2op_normalize_long_columns_scale_fwd / _bwd: a 2-D range (columns x
 *     row-slices): item (c, y) writes rows k = y (mod R) of column c with
 *     the forward's and the tile kernels' formula and rounding; in place, a
 *     column whose scale is 1 is not written.  Every read of x by pass 1
 *     and 2 precedes pass 3's writes (event order), so in place is safe.
 * No private arrays, uniform barriers (loops bounded by the work-group's
 * values), 64-bit offsets everywhere.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, 50 MB L2, ~600 ns
 * DRAM latency, so ~15-20 KB of loads in flight per SM reach peak; 2,048
 * items per SM), float32 data summed in double (fast fp64), out of place,
 * device time; not yet measured on a GPU.
 *   (1M, 64) along axis 0 (256 MB): pass 1 has 256 blocks x 8 residues x 64
 *     columns = 131,072 items (512 groups of 256: ~4 groups, ~1,000 items per
 *     SM), each 512 loads with 4 in flight: ~1,000 x 4 x 4 B = 16 KB in
 *     flight per SM, near peak: 256 MB read in ~80-110 us; 1 MB of
 *     partials written.  Pass 2: 64 work-groups, each 256 lanes x slots
 *     of 8 blocks read from L2 then 5 tree levels of L2 round trips
 *     (~0.5 us each): ~5 us.  Pass 3: 64 columns x 4,224 row-slices
 *     (~2,048 items per SM, ~240 rows each, 1-2 loads in flight per item:
 *     8-16 KB per SM), 256 MB read (mostly missing L2: 256 MB > 50 MB) and
 *     256 MB written: ~170-320 us.  Predicted 280-450 us with the 3
 *     launches (~10 us), against 15-50 ms for the 2 tile work-groups of
 *     normalize_columns.cl (a ~50x gain).  The backward reads x and dy
 *     in pass 1 and pass 3: ~1.5x the forward.
 *   (4096, 4096) along axis 0: n = 4,096 is below the threshold, so
 *     normalize_columns.cl's tiles run as before (predicted 150-250 us).
 * CPU devices (PoCL) run the same passes 1 and 2 (a work-group's items walk
 * the same rows, 512 per block, which stay in L1/L2), and pass 3 as
 * caffe2op_normalize_long_columns_rows_fwd / _bwd: a work item per
 * run of rows in memory order, 8 columns per vector operation (the same
 * operations on each value, so the same bits; half is scalar there).  On
 * PoCL (2 loaded cores), (1M, 64) float32 along axis 0 took 0.5-0.6x the
 * strip kernel's time forward and 0.9-0.95x backward (two runs).
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* Slots of step 2 (a power of two). */
#define C2O_LONG_SLOTS 32

/* ACC per partial of one sum: hi, and lo in compensated mode. */
#define C2O_LONG_PARTS (C2O_COMP ? 2 : 1)

/* (hi, lo) += the partial at e (lo only in compensated mode). */
#if C2O_COMP
#  define C2O_LONG_ADD(h, l, sh, sl, e) C2O_ACCUM(ACC, sh, sl, (h)[e], (l)[e])
#else
#  define C2O_LONG_ADD(h, l, sh, sl, e) ((sh) += (h)[e])
#endif

/* Pass 1: a work item per (o, b, r, column): partial r of block b of the
 * column (and with dy, of x * dy) into scratch.  parts: hi[count], then in
 * compensated mode lo[count]; with dy the same again for x * dy. */
static void c2o_long_sums(__global const C2O_STORAGE *x, __global const C2O_STORAGE *dy, const int cross,
                          __global ACC *partials, const ulong count, const ulong n, const ulong inner,
                          const ulong block)
{
    const ulong g = get_global_id(0);
    if (g >= count) {
        return;
    }
    const ulong col = g % inner;
    const ulong q = g / inner; /* (o * nb + b) * 8 + r */
    const ulong r = q % 8;
    const ulong nb = (n + block - 1) / block;
    const ulong o = (q / 8) / nb;
    const ulong b = (q / 8) - o * nb;
    const ulong end = min(n, (b + 1) * block);
    __global const C2O_STORAGE *xc = x + o * n * inner + col;
    __global const C2O_STORAGE *dyc = dy + o * n * inner + col;
    const ulong step = 8 * inner;
    ACC hi = (ACC)0, lo = (ACC)0, xy = (ACC)0, xy_lo = (ACC)0;
    ulong k = b * block + r;
    /* Four loads issued before their (serial, in-order) additions. */
    for (; k + 24 < end; k += 32) {
        const ulong e = k * inner;
        const ACC a0 = C2O_LOAD_ACC(xc, e);
        const ACC a1 = C2O_LOAD_ACC(xc, e + step);
        const ACC a2 = C2O_LOAD_ACC(xc, e + 2 * step);
        const ACC a3 = C2O_LOAD_ACC(xc, e + 3 * step);
        C2O_ACCUM_SQ(ACC, hi, lo, a0);
        C2O_ACCUM_SQ(ACC, hi, lo, a1);
        C2O_ACCUM_SQ(ACC, hi, lo, a2);
        C2O_ACCUM_SQ(ACC, hi, lo, a3);
        if (cross) {
            const ACC d0 = C2O_LOAD_ACC(dyc, e);
            const ACC d1 = C2O_LOAD_ACC(dyc, e + step);
            const ACC d2 = C2O_LOAD_ACC(dyc, e + 2 * step);
            const ACC d3 = C2O_LOAD_ACC(dyc, e + 3 * step);
            C2O_ACCUM_PROD(ACC, xy, xy_lo, a0, d0);
            C2O_ACCUM_PROD(ACC, xy, xy_lo, a1, d1);
            C2O_ACCUM_PROD(ACC, xy, xy_lo, a2, d2);
            C2O_ACCUM_PROD(ACC, xy, xy_lo, a3, d3);
        }
    }
    for (; k < end; k += 8) {
        const ACC a = C2O_LOAD_ACC(xc, k * inner);
        C2O_ACCUM_SQ(ACC, hi, lo, a);
        if (cross) {
            const ACC d = C2O_LOAD_ACC(dyc, k * inner);
            C2O_ACCUM_PROD(ACC, xy, xy_lo, a, d);
        }
    }
    partials[g] = hi;
#if C2O_COMP
    partials[count + g] = lo;
#endif
    if (cross) {
        __global ACC *p = partials + C2O_LONG_PARTS * count;
        p[g] = xy;
#if C2O_COMP
        p[count + g] = xy_lo;
#endif
    }
}

__kernel void caffe2op_normalize_long_columns_sums_fwd(__global const C2O_STORAGE *x, const ulong x_offset,
                                                      __global ACC *partials, const ulong count, const ulong n,
                                                      const ulong inner, const ulong block)
{
    c2o_long_sums(x + x_offset, x + x_offset, 0, partials, count, n, inner, block);
}

/* Pass 1 of the backward: partials of x * x, then of x * dy. */
__kernel void caffe2op_normalize_long_columns_sums_bwd(__global const C2O_STORAGE *x, const ulong x_offset,
                                                      __global const C2O_STORAGE *dy, const ulong dy_offset,
                                                      __global ACC *partials, const ulong count, const ulong n,
                                                      const ulong inner, const ulong block)
{
    c2o_long_sums(x + x_offset, dy + dy_offset, 1, partials, count, n, inner, block);
}

/* Steps 2 and 3 for column (o, col), by the whole work-group (item lid of wg),
 * in place in h (lo parts in l): (hi, lo) = the column's sum, for item 0. */
static void c2o_long_column_sum(__global ACC *h, __global ACC *l, const ulong o, const ulong col, const ulong nb,
                                const ulong inner, const uint lid, const uint wg, ACC *hi, ACC *lo)
{
    const uint slots = (uint)min(nb, (ulong)C2O_LONG_SLOTS);
    for (uint p = lid; p < 8 * C2O_LONG_SLOTS; p += wg) {
        const uint r = p / C2O_LONG_SLOTS;
        const uint j = p % C2O_LONG_SLOTS;
        if (j < slots) {
            const ulong home = ((o * nb + j) * 8 + r) * inner + col;
            ACC sh = h[home];
            ACC sl = (ACC)0;
#if C2O_COMP
            sl = l[home];
#endif
            for (ulong b = j + C2O_LONG_SLOTS; b < nb; b += C2O_LONG_SLOTS) {
                const ulong e = ((o * nb + b) * 8 + r) * inner + col;
                C2O_LONG_ADD(h, l, sh, sl, e);
            }
            h[home] = sh;
#if C2O_COMP
            l[home] = sl;
#endif
        }
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (uint step_h = C2O_LONG_SLOTS / 2; step_h >= 1; step_h /= 2) {
        for (uint p = lid; p < 8 * step_h; p += wg) {
            const uint r = p / step_h;
            const uint g = p % step_h;
            if (g + step_h < slots) {
                const ulong dst = ((o * nb + g) * 8 + r) * inner + col;
                const ulong src = ((o * nb + g + step_h) * 8 + r) * inner + col;
                ACC sh = h[dst];
                ACC sl = (ACC)0;
#if C2O_COMP
                sl = l[dst];
#endif
                C2O_LONG_ADD(h, l, sh, sl, src);
                h[dst] = sh;
#if C2O_COMP
                l[dst] = sl;
#endif
            }
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
    *hi = (ACC)0;
    *lo = (ACC)0;
    if (lid == 0) {
        const ulong e = o * nb * 8 * inner + col; /* slot 0 of lane r at e + r * inner */
        const C2O_ACC8 lanes = (C2O_ACC8)(h[e], h[e + inner], h[e + 2 * inner], h[e + 3 * inner], h[e + 4 * inner],
                                          h[e + 5 * inner], h[e + 6 * inner], h[e + 7 * inner]);
#if C2O_COMP
        const C2O_ACC8 lanes_lo = (C2O_ACC8)(l[e], l[e + inner], l[e + 2 * inner], l[e + 3 * inner], l[e + 4 * inner],
                                             l[e + 5 * inner], l[e + 6 * inner], l[e + 7 * inner]);
#else
        const C2O_ACC8 lanes_lo = (C2O_ACC8)((ACC)0);
#endif
        c2o_sum8(lanes, lanes_lo, hi, lo);
    }
}

/* Pass 2 (forward): a work-group per column of the outer * inner columns;
 * scales[column] = its scale, scales = partials + C2O_LONG_PARTS * count
 * (after pass 1's partials, count per part). */
__kernel void caffe2op_normalize_long_columns_reduce_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global ACC *partials, const ulong count,
    const ulong n, const ulong inner, const ulong outer, const ulong block, const int use_max_norm, const ACC norm)
{
    __global ACC *scales = partials + C2O_LONG_PARTS * count;
    const uint lid = (uint)get_local_id(0);
    const uint wg = (uint)get_local_size(0);
    const ulong nb = (n + block - 1) / block;
    for (ulong c = get_group_id(0); c < outer * inner; c += get_num_groups(0)) {
        const ulong o = c / inner;
        const ulong col = c - o * inner;
        ACC hi, lo;
        c2o_long_column_sum(partials, partials + count, o, col, nb, inner, lid, wg, &hi, &lo);
        if (lid == 0) {
            __global const C2O_STORAGE *xc = x + x_offset + o * n * inner + col;
            scales[c] = C2O_NEEDS_RESCUE(hi + lo) ? c2o_serial_rescued_scale(xc, n, inner, use_max_norm, norm)
                                                  : c2o_scale(hi, lo, use_max_norm, norm);
        }
    }
}

/* Pass 2 (backward): factors[column + j * columns], j < 4: a, b, c1, c2 (dx = ((dy a - ((x c1) c2) b) c1) c2),
 * factors = partials + 2 * C2O_LONG_PARTS * count (after <x, x>'s and <x, dy>'s partials). */
__kernel void caffe2op_normalize_long_columns_reduce_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global ACC *partials, const ulong count, const ulong n, const ulong inner, const ulong outer, const ulong block)
{
    __global ACC *factors = partials + 2 * C2O_LONG_PARTS * count;
    const uint lid = (uint)get_local_id(0);
    const uint wg = (uint)get_local_size(0);
    const ulong nb = (n + block - 1) / block;
    const ulong columns = outer * inner;
    __global ACC *cross = partials + C2O_LONG_PARTS * count;
    for (ulong c = get_group_id(0); c < columns; c += get_num_groups(0)) {
        const ulong o = c / inner;
        const ulong col = c - o * inner;
        ACC xx, xx_lo, xy, xy_lo;
        c2o_long_column_sum(partials, partials + count, o, col, nb, inner, lid, wg, &xx, &xx_lo);
        c2o_long_column_sum(cross, cross + count, o, col, nb, inner, lid, wg, &xy, &xy_lo);
        if (lid == 0) {
            ACC fa, fb, c1 = (ACC)1, c2 = (ACC)1;
            if (C2O_GRAD_RESCUE && C2O_NEEDS_RESCUE(xx + xx_lo)) {
                const ulong base = o * n * inner + col;
                c2o_serial_rescued_grad(x + x_offset + base, dy + dy_offset + base, n, inner, &fa, &fb, &c1, &c2);
            } else {
                c2o_grad_factors(xx, xx_lo, xy, xy_lo, 0, &fa, &fb);
            }
            factors[c] = fa;
            factors[columns + c] = fb;
            factors[2 * columns + c] = c1;
            factors[3 * columns + c] = c2;
        }
    }
}

/* Pass 3 (forward): item (column c, row-slice y) of a 2-D range: rows k = y (mod R) of column c of every o. */
__kernel void caffe2op_normalize_long_columns_scale_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global C2O_STORAGE *y, const ulong y_offset,
    __global const ACC *scratch, const ulong scales_offset, const ulong n, const ulong inner, const ulong outer,
    const int in_place)
{
    __global const ACC *scales = scratch + scales_offset;
    const ulong col = get_global_id(0);
    if (col >= inner) {
        return;
    }
    const ulong slice = get_global_id(1);
    const ulong slices = get_global_size(1);
    for (ulong o = 0; o < outer; ++o) {
        const ACC sc = scales[o * inner + col];
        if (in_place && sc == (ACC)1) {
            continue;
        }
        const C2O_VALUE sv = (C2O_VALUE)sc;
        __global const C2O_STORAGE *xc = x + x_offset + o * n * inner + col;
        __global C2O_STORAGE *yc = y + y_offset + o * n * inner + col;
        for (ulong k = slice; k < n; k += slices) {
            C2O_STORE(yc, k * inner, (C2O_VALUE)C2O_LOAD(xc, k * inner) * sv);
        }
    }
}

/* Pass 3 (backward): dx of rows k = y (mod R) of column c (see caffe2op_normalize_long_columns_scale_fwd). */
__kernel void caffe2op_normalize_long_columns_scale_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset, __global const ACC *scratch, const ulong factors_offset,
    const ulong n, const ulong inner, const ulong outer)
{
    __global const ACC *factors = scratch + factors_offset;
    const ulong col = get_global_id(0);
    if (col >= inner) {
        return;
    }
    const ulong slice = get_global_id(1);
    const ulong slices = get_global_size(1);
    const ulong columns = outer * inner;
    for (ulong o = 0; o < outer; ++o) {
        const ulong c = o * inner + col;
        const ACC fa = factors[c];
        const ACC fb = factors[columns + c];
        const ulong base = o * n * inner + col;
        __global const C2O_STORAGE *xc = x + x_offset + base;
        __global const C2O_STORAGE *dyc = dy + dy_offset + base;
        __global C2O_STORAGE *dxc = dx + dx_offset + base;
#if C2O_GRAD_RESCUE
        const ACC c1 = factors[2 * columns + c];
        const ACC c2 = factors[3 * columns + c];
#endif
        for (ulong k = slice; k < n; k += slices) {
            const ACC r = C2O_GRAD_AT(xc, dyc, k * inner, fa, fb, c1, c2);
            C2O_STORE(dxc, k * inner, (C2O_VALUE)r);
        }
    }
}

/* ------------------------------------------- pass 3 on CPU devices (PoCL) */

/* Columns the rows kernels take 8 at a time: none for half, whose vector and scalar
 * stores turn a NaN into different half NaNs on PoCL (0x7e00 and 0x7fff). */
#if defined(CAFFE2OP_HALF) && CAFFE2OP_HALF
#  define C2O_LONG_ROWS_FULL(inner) ((ulong)0)
#else
#  define C2O_LONG_ROWS_FULL(inner) ((inner) / 8)
#endif

/* A work item per (o, run of `span` rows): its rows in memory order, 8 columns at a time
 * (vload8 at any offset: CPUs only); each value gets the same operations as in
 * caffe2op_normalize_long_columns_scale_fwd, so the bits are the same. */
__kernel void caffe2op_normalize_long_columns_rows_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global C2O_STORAGE *y, const ulong y_offset,
    __global const ACC *scratch, const ulong scales_offset, const ulong n, const ulong inner, const ulong outer,
    const ulong span, const int in_place)
{
    const ulong item = get_global_id(0);
    const ulong runs = (n + span - 1) / span;
    if (item >= outer * runs) {
        return;
    }
    const ulong o = item / runs;
    const ulong k0 = (item - o * runs) * span;
    const ulong k1 = min(n, k0 + span);
    __global const ACC *scales = scratch + scales_offset + o * inner;
    __global const C2O_STORAGE *xb = x + x_offset + o * n * inner;
    __global C2O_STORAGE *yb = y + y_offset + o * n * inner;
    const ulong full = C2O_LONG_ROWS_FULL(inner);
    for (ulong k = k0; k < k1; ++k) {
        for (ulong c = 0; c < full; ++c) {
            const C2O_ACC8 s = vload8(0, scales + c * 8);
            if (in_place && all(s == (C2O_ACC8)((ACC)1))) {
                continue;
            }
            const ulong e = k * inner + c * 8;
            C2O_STORE8(yb, e, C2O_LOAD8(xb, e) * C2O_TO_VALUE8(s));
        }
        for (ulong col = full * 8; col < inner; ++col) {
            const ACC s = scales[col];
            if (!(in_place && s == (ACC)1)) {
                C2O_STORE(yb, k * inner + col, (C2O_VALUE)C2O_LOAD(xb, k * inner + col) * (C2O_VALUE)s);
            }
        }
    }
}

/* The backward's pass 3 on CPU devices (see caffe2op_normalize_long_columns_rows_fwd and _grad). */
__kernel void caffe2op_normalize_long_columns_rows_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset, __global const ACC *scratch, const ulong factors_offset,
    const ulong n, const ulong inner, const ulong outer, const ulong span)
{
    const ulong item = get_global_id(0);
    const ulong runs = (n + span - 1) / span;
    if (item >= outer * runs) {
        return;
    }
    const ulong o = item / runs;
    const ulong k0 = (item - o * runs) * span;
    const ulong k1 = min(n, k0 + span);
    const ulong columns = outer * inner;
    __global const ACC *fa = scratch + factors_offset + o * inner;
    __global const ACC *fb = fa + columns;
#if C2O_GRAD_RESCUE
    __global const ACC *f1 = fa + 2 * columns;
    __global const ACC *f2 = fa + 3 * columns;
#endif
    const ulong base = o * n * inner;
    __global const C2O_STORAGE *xb = x + x_offset + base;
    __global const C2O_STORAGE *dyb = dy + dy_offset + base;
    __global C2O_STORAGE *dxb = dx + dx_offset + base;
    const ulong full = C2O_LONG_ROWS_FULL(inner);
    for (ulong k = k0; k < k1; ++k) {
        for (ulong c = 0; c < full; ++c) {
            const ulong e = k * inner + c * 8;
            const C2O_ACC8 a = vload8(0, fa + c * 8);
            const C2O_ACC8 b = vload8(0, fb + c * 8);
            const C2O_ACC8 r =
                C2O_GRAD_OF(C2O_LOAD8_ACC(xb, e), C2O_LOAD8_ACC(dyb, e), a, b, vload8(0, f1 + c * 8), vload8(0, f2 + c * 8));
            C2O_STORE8(dxb, e, C2O_TO_VALUE8(r));
        }
        for (ulong col = full * 8; col < inner; ++col) {
            const ulong e = k * inner + col;
            const ACC r = C2O_GRAD_AT(xb, dyb, e, fa[col], fb[col], f1[col], f2[col]);
            C2O_STORE(dxb, e, (C2O_VALUE)r);
        }
    }
}
