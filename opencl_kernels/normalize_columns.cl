/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient along every axis but the last of a dense
 * array (inner > 1): each vector is a column of the (outer, n, inner) view.
 * Columns of more than 65,536 rows take normalize_long_columns.cl instead
 * (the choice depends on n alone, the same on every device).
 * The operator's rule, the accumulation modes and the rescue are described
 * in normalize_common.h.
 *
 * Canonical order of a column's sum (of squares; in the backward also of
 * x * dy), fixed by n alone: 8 partial sums, partial r adding the rows
 * k = r, r + 8, r + 16, ... in increasing k (a (hi, lo) pair each in
 * compensated mode), then the 8 partials added in c2o_sum8's halving tree
 * ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)).  A column whose sum
 * needs the rescue is measured again serially (c2o_serial_rescued_scale /
 * _grad, one order too).  Two launch shapes compute exactly that order:
 *
 *   caffe2op_normalize_columns_fwd / _bwd (CPU devices): a work item per
 *     strip of up to C2O_COLUMN_STRIP chunks of 8 adjacent columns; it
 *     walks down k in bands of C2O_BAND_ROWS rows, chunk by chunk (row
 *     k = r (mod 8) into partial r of the chunk: ACC8 vectors over its 8
 *     columns, in registers across the band), reading each row's strip in
 *     order (few pages per row).
 *   caffe2op_normalize_columns_tile_fwd / _bwd (GPUs): a work-group per
 *     tile of T adjacent columns (T = tile, at most 64) x S row-slices
 *     (S = slices, 8 or fewer where the device caps the work-group): item
 *     (c, s) adds the rows k = r (mod 8) of column c for its residues
 *     r = s, s + S, ... (adjacent items read adjacent columns: coalesced,
 *     scalar loads only, no vload8 at unaligned offsets), writes each
 *     partial to local memory, and after one barrier item (c, 0) adds its
 *     column's 8 partials in the tree; after another every item scales
 *     its rows k = s (mod S).  No private array (every index is a constant
 *     or local memory); barriers are uniform (a work-group loops over
 *     tiles together).
 *
 * The same source gives the same bits on both shapes of one device (the
 * same operations on each value, whether in an ACC8 lane or a scalar; a
 * different compiler may still contract a * b + c differently).  In place
 * (y == x, `in_place` set) is safe: a column is read completely before any
 * of it is written (by the same work item, or after a barrier); columns
 * whose scale is 1 are then not written.
 *
 * Performance model of the tile kernels (H100 SXM: 3.35 TB/s HBM3, 132 SMs,
 * 50 MB L2, ~600 ns DRAM latency, so ~15 KB of loads must be in flight per
 * SM, ~25 GB/s each, to reach peak; 2,048 items per SM).  float32 data summed
 * in double (fast fp64), out of place, device time; not yet measured on a GPU.
 * Bytes: the column is read twice (sums, then scaling: the second read hits
 * L2 when the tile's columns, T * n * 4 bytes, were read recently) and
 * written once.  Latency chain per item: n / 8 independent loads (unrolled
 * by the compiler, ~4 in flight per item) feeding one serial chain of n / 8
 * dependent double adds (~8 cycles each: never the limit), 3 barriers per
 * tile, then n / S loads and stores.  No private array, scalar loads only:
 * registers stay low (estimated < 40; .ci/gpu records them).
 *   (4096, 4096) along axis 0: 64 tiles of 64 would leave half the SMs idle,
 *     so T = 32: 128 work-groups of 256 items (8 warps, one group on each of
 *     128 SMs), 128 B per warp per row (coalesced).  In flight per SM: 8
 *     warps x 32 x 4 B x ~4 = ~4 KB, a quarter of what peak needs: ~7 GB/s
 *     per SM, ~0.9 TB/s.  64 MB read for the sums (~75 us), 64 MB read
 *     again (half from L2: 2 x 64 MB does not fit its 50 MB) and 64 MB
 *     written (~75 us): predicted 150-250 us (was 250-450 us with a work
 *     item per 8 columns on 16 SMs).
 *   (1M, 64) along axis 0 (and any column over 65,536 rows) does not run
 *     here: 2 tiles of 32 columns would be 2 work-groups on 2 of 132 SMs
 *     (predicted 15-50 ms).  Such long columns take their own order and
 *     kernels, row blocks on many work-groups reduced in a second pass
 *     (normalize_long_columns.cl: predicted 280-450 us).
 *   (64, 1M) along axis 0: 16,384 tiles of 64 (512-item groups, 4 resident
 *     per SM: 2,048 items), 8 rows per item per pass.  ~64 KB in flight per
 *     SM (bandwidth-bound); the second read of a 16 KB tile hits L2: 256 MB
 *     read + 256 MB written = 512 MB, 153 us at peak: predicted 180-250 us.
 *   (1024, 256, 256) along axis 1 (a 3-D middle axis): 4,096 tiles of 64,
 *     4 groups per SM, 32 rows per item per pass, ~32 KB in flight per SM;
 *     a 64 KB tile is re-read from L2: 256 MB read + 256 MB written:
 *     predicted 180-260 us.
 * The CPU-shape kernels are for CPU devices (PoCL): a work item holds 8
 * partials per chunk of its strip in a private array (C2O_COLUMN_STRIP = 64
 * chunks: 32 KB of double8 forward, 64 KB backward, in L1/L2), measured
 * within noise of the former serial order on PoCL.
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* ------------------------------------------------------------- CPU shape */

/* Load up to 8 adjacent values (w of them, zeros after) as ACC. */
static C2O_ACC8 c2o_load_block(__global const C2O_STORAGE *p, const ulong e, const uint w)
{
    if (w == 8) {
        return C2O_LOAD8_ACC(p, e);
    }
    ACC t[8];
#pragma unroll
    for (uint j = 0; j < 8; ++j) {
        t[j] = j < w ? C2O_LOAD_ACC(p, e + j) : (ACC)0;
    }
    return vload8(0, t);
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
#pragma unroll
    for (uint j = 0; j < 8; ++j) {
        if (j < w) {
            C2O_STORE(p, e + j, t[j]);
        }
    }
}

/* Width (1..8) of chunk c (8 adjacent vectors) of a row of `inner` vectors. */
#define C2O_CHUNK_WIDTH(c, inner) ((uint)min((ulong)8, (inner) - (c) * 8))

/* Chunks of 8 adjacent columns one work item of the CPU shape may take (its
 * 8 partials per chunk live in a private array: 8 * C2O_COLUMN_STRIP ACC8,
 * twice that for compensated pairs and for the backward's two sums). */
#ifndef C2O_COLUMN_STRIP
#  define C2O_COLUMN_STRIP 1
#endif

/* Work item `item` of a CPU-shape kernel: its row o, first chunk c0 and chunk count m. */
static void c2o_strip(const ulong item, const ulong inner, const uint per_item, ulong *o, ulong *c0, uint *m)
{
    const ulong chunks = (inner + 7) / 8;
    const ulong items_per_row = (chunks + per_item - 1) / per_item;
    *o = item / items_per_row;
    *c0 = (item - *o * items_per_row) * per_item;
    *m = (uint)min((ulong)per_item, chunks - *c0);
}

/* (hi, lo) = the canonical sum of 8 partials p[0..7] (ACC8 lanes: 8 columns),
 * c2o_sum8's tree applied lane by lane; p is consumed. */
static void c2o_residue_tree(C2O_ACC8 *h, C2O_ACC8 *l, C2O_ACC8 *hi, C2O_ACC8 *lo)
{
#pragma unroll
    for (uint r = 0; r < 4; ++r) {
        C2O_ACCUM(C2O_ACC8, h[r], l[r], h[r + 4], l[r + 4]);
    }
#pragma unroll
    for (uint r = 0; r < 2; ++r) {
        C2O_ACCUM(C2O_ACC8, h[r], l[r], h[r + 2], l[r + 2]);
    }
    C2O_ACCUM(C2O_ACC8, h[0], l[0], h[1], l[1]);
    *hi = h[0];
    *lo = C2O_COMP ? l[0] : (C2O_ACC8)((ACC)0);
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

/* Rows per band of the CPU shape (a multiple of 8). */
#ifndef C2O_BAND_ROWS
#  define C2O_BAND_ROWS 16
#endif

/* Partial r of chunk j of this item (8 per chunk). */
#define C2O_PART(j, r) ((j) * 8 + (r))

/* A work item per strip of `per_item` (<= C2O_COLUMN_STRIP) chunks of 8 adjacent
 * vectors; n_items = outer * ceil(ceil(inner / 8) / per_item).  Bands of rows,
 * sweep, row k into partial k mod 8 (the canonical order above). */
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
    C2O_ACC8 acc[8 * C2O_COLUMN_STRIP];
#if C2O_COMP
    C2O_ACC8 acc_lo[8 * C2O_COLUMN_STRIP];
#endif
    for (uint j = 0; j < m; ++j) {
#pragma unroll
        for (uint r = 0; r < 8; ++r) {
            acc[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
#if C2O_COMP
            acc_lo[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
#endif
        }
    }
    /* Bands of C2O_BAND_ROWS rows: a chunk's 8 partials stay in registers across its band. */
    for (ulong k = 0; k < n; k += C2O_BAND_ROWS) {
        const uint rows = (uint)min((ulong)C2O_BAND_ROWS, n - k);
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            C2O_ACC8 h[8];
#if C2O_COMP
            C2O_ACC8 l[8];
#endif
#pragma unroll
            for (uint r = 0; r < 8; ++r) {
                h[r] = acc[C2O_PART(j, r)];
#if C2O_COMP
                l[r] = acc_lo[C2O_PART(j, r)];
#endif
            }
            if (w == 8 && rows == C2O_BAND_ROWS) { /* the common case: whole chunks, a whole band */
#pragma unroll
                for (uint q = 0; q < C2O_BAND_ROWS; q += 8) {
                    const ulong e = (k + q) * inner + j * 8;
#pragma unroll
                    for (uint r = 0; r < 8; ++r) {
                        const C2O_ACC8 a = C2O_LOAD8_ACC(xb, e + r * inner);
                        C2O_ACCUM_SQ(C2O_ACC8, h[r], l[r], a);
                    }
                }
            } else {
                for (uint q = 0; q < rows; q += 8) {
                    const ulong e = (k + q) * inner + j * 8;
#pragma unroll
                    for (uint r = 0; r < 8; ++r) {
                        if (q + r < rows) {
                            const C2O_ACC8 a = c2o_load_block(xb, e + r * inner, w);
                            C2O_ACCUM_SQ(C2O_ACC8, h[r], l[r], a);
                        }
                    }
                }
            }
#pragma unroll
            for (uint r = 0; r < 8; ++r) {
                acc[C2O_PART(j, r)] = h[r];
#if C2O_COMP
                acc_lo[C2O_PART(j, r)] = l[r];
#endif
            }
        }
    }
    int untouched = in_place;
    for (uint j = 0; j < m; ++j) {
        C2O_ACC8 hi, lo;
#if C2O_COMP
        c2o_residue_tree(acc + C2O_PART(j, 0), acc_lo + C2O_PART(j, 0), &hi, &lo);
#else
        c2o_residue_tree(acc + C2O_PART(j, 0), acc + C2O_PART(j, 0), &hi, &lo);
#endif
        const C2O_ACC8 s = c2o_block_scales(hi, lo, xb + j * 8, n, inner, j + 1 == m ? last : 8u, use_max_norm, norm);
        acc[C2O_PART(j, 0)] = s;
        untouched = untouched && all(s == (C2O_ACC8)((ACC)1));
    }
    if (untouched) {
        return; /* in place with every scale 1: nothing to write */
    }
    for (ulong k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const ulong e = k * inner + j * 8;
            const C2O_VALUE8 s = C2O_TO_VALUE8(acc[C2O_PART(j, 0)]);
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
    C2O_ACC8 axx[8 * C2O_COLUMN_STRIP];
    C2O_ACC8 axy[8 * C2O_COLUMN_STRIP];
#if C2O_COMP
    C2O_ACC8 axx_lo[8 * C2O_COLUMN_STRIP];
    C2O_ACC8 axy_lo[8 * C2O_COLUMN_STRIP];
#endif
    for (uint j = 0; j < m; ++j) {
#pragma unroll
        for (uint r = 0; r < 8; ++r) {
            axx[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
            axy[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
#if C2O_COMP
            axx_lo[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
            axy_lo[C2O_PART(j, r)] = (C2O_ACC8)((ACC)0);
#endif
        }
    }
    for (ulong k = 0; k < n; k += C2O_BAND_ROWS) {
        const uint rows = (uint)min((ulong)C2O_BAND_ROWS, n - k);
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            C2O_ACC8 hx[8], hy[8];
#if C2O_COMP
            C2O_ACC8 lx[8], ly[8];
#endif
#pragma unroll
            for (uint r = 0; r < 8; ++r) {
                hx[r] = axx[C2O_PART(j, r)];
                hy[r] = axy[C2O_PART(j, r)];
#if C2O_COMP
                lx[r] = axx_lo[C2O_PART(j, r)];
                ly[r] = axy_lo[C2O_PART(j, r)];
#endif
            }
            if (w == 8 && rows == C2O_BAND_ROWS) { /* the common case: whole chunks, a whole band */
#pragma unroll
                for (uint q = 0; q < C2O_BAND_ROWS; q += 8) {
                    const ulong e = (k + q) * inner + j * 8;
#pragma unroll
                    for (uint r = 0; r < 8; ++r) {
                        const C2O_ACC8 a = C2O_LOAD8_ACC(xb, e + r * inner);
                        const C2O_ACC8 d = C2O_LOAD8_ACC(dyb, e + r * inner);
                        C2O_ACCUM_SQ(C2O_ACC8, hx[r], lx[r], a);
                        C2O_ACCUM_PROD(C2O_ACC8, hy[r], ly[r], a, d);
                    }
                }
            } else {
                for (uint q = 0; q < rows; q += 8) {
                    const ulong e = (k + q) * inner + j * 8;
#pragma unroll
                    for (uint r = 0; r < 8; ++r) {
                        if (q + r < rows) {
                            const C2O_ACC8 a = c2o_load_block(xb, e + r * inner, w);
                            const C2O_ACC8 d = c2o_load_block(dyb, e + r * inner, w);
                            C2O_ACCUM_SQ(C2O_ACC8, hx[r], lx[r], a);
                            C2O_ACCUM_PROD(C2O_ACC8, hy[r], ly[r], a, d);
                        }
                    }
                }
            }
#pragma unroll
            for (uint r = 0; r < 8; ++r) {
                axx[C2O_PART(j, r)] = hx[r];
                axy[C2O_PART(j, r)] = hy[r];
#if C2O_COMP
                axx_lo[C2O_PART(j, r)] = lx[r];
                axy_lo[C2O_PART(j, r)] = ly[r];
#endif
            }
        }
    }
    for (uint j = 0; j < m; ++j) {
        C2O_ACC8 sxx, sxx_lo, sxy, sxy_lo;
#if C2O_COMP
        c2o_residue_tree(axx + C2O_PART(j, 0), axx_lo + C2O_PART(j, 0), &sxx, &sxx_lo);
        c2o_residue_tree(axy + C2O_PART(j, 0), axy_lo + C2O_PART(j, 0), &sxy, &sxy_lo);
#else
        c2o_residue_tree(axx + C2O_PART(j, 0), axx + C2O_PART(j, 0), &sxx, &sxx_lo);
        c2o_residue_tree(axy + C2O_PART(j, 0), axy + C2O_PART(j, 0), &sxy, &sxy_lo);
#endif
        ACC fa[8], fb[8], f1[8], f2[8], xx[8], xy[8], xx_lo[8], xy_lo[8];
        vstore8(sxx, 0, xx);
        vstore8(sxy, 0, xy);
        vstore8(sxx_lo, 0, xx_lo);
        vstore8(sxy_lo, 0, xy_lo);
        const uint w = j + 1 == m ? last : 8u;
#pragma unroll
        for (uint l = 0; l < 8; ++l) {
            f1[l] = (ACC)1;
            f2[l] = (ACC)1;
            if (C2O_GRAD_RESCUE && l < w && C2O_NEEDS_RESCUE(xx[l] + xx_lo[l])) {
                c2o_serial_rescued_grad(xb + j * 8 + l, dyb + j * 8 + l, n, inner, &fa[l], &fb[l], &f1[l], &f2[l]);
            } else {
                c2o_grad_factors(xx[l], xx_lo[l], xy[l], xy_lo[l], 0, &fa[l], &fb[l]);
            }
        }
        /* The chunk's partials are spent: parts 1 and 2 keep the rescue's 2^-e = c1 c2. */
        axx[C2O_PART(j, 0)] = vload8(0, fa);
        axy[C2O_PART(j, 0)] = vload8(0, fb);
        axx[C2O_PART(j, 1)] = vload8(0, f1);
        axx[C2O_PART(j, 2)] = vload8(0, f2);
    }
    for (ulong k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            const ulong e = k * inner + j * 8;
            const C2O_ACC8 r = C2O_GRAD_OF(c2o_load_block(xb, e, w), c2o_load_block(dyb, e, w), axx[C2O_PART(j, 0)],
                                           axy[C2O_PART(j, 0)], axx[C2O_PART(j, 1)], axx[C2O_PART(j, 2)]);
            c2o_store_block(dxb, e, w, C2O_TO_VALUE8(r));
        }
    }
}

/* ------------------------------------------------------------- GPU shape */

/* The 8 partials of column c from local memory part[r * tile + c], as ACC8 lanes. */
static C2O_ACC8 c2o_tile_partials(__local const ACC *part, const uint tile, const uint c)
{
    return (C2O_ACC8)(part[c], part[tile + c], part[2 * tile + c], part[3 * tile + c], part[4 * tile + c],
                      part[5 * tile + c], part[6 * tile + c], part[7 * tile + c]);
}

/* Item (c, s) of a tile: the partials of residues r = s, s + slices, ... of its
 * column xc[k * inner] (zero for a column past the array's edge) into
 * part[r * tile + c] (+ part_lo in compensated mode); with yc, also those of
 * xc * yc into cross[...]. */
static void c2o_tile_partial_sums(__global const C2O_STORAGE *xc, __global const C2O_STORAGE *yc, const int valid,
                                  const ulong n, const ulong inner, const uint tile, const uint slices,
                                  const uint c, const uint s, __local ACC *part, __local ACC *cross)
{
    for (uint r = s; r < 8; r += slices) {
        ACC hi = (ACC)0, lo = (ACC)0, xy = (ACC)0, xy_lo = (ACC)0;
        if (valid) {
            for (ulong k = r; k < n; k += 8) {
                const ACC a = C2O_LOAD_ACC(xc, k * inner);
                C2O_ACCUM_SQ(ACC, hi, lo, a);
                if (cross) {
                    const ACC d = C2O_LOAD_ACC(yc, k * inner);
                    C2O_ACCUM_PROD(ACC, xy, xy_lo, a, d);
                }
            }
        }
        part[r * tile + c] = hi;
        if (cross) {
            cross[r * tile + c] = xy;
        }
#if C2O_COMP
        part[(8 + r) * tile + c] = lo;
        if (cross) {
            cross[(8 + r) * tile + c] = xy_lo;
        }
#endif
    }
}

/* Local ACC per column of a tile: the partials (8, or 16 with their low parts). */
#define C2O_TILE_PARTS (C2O_COMP ? 16 : 8)

/* A work-group per tile of `tile` adjacent columns x `slices` row-slices
 * (work-group size tile * slices); work-groups loop over the n_tiles =
 * outer * ceil(inner / tile) tiles.  scratch: (C2O_TILE_PARTS + 1) * tile ACC. */
__kernel void caffe2op_normalize_columns_tile_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    const ulong n_tiles, const ulong n, const ulong inner, const uint tile, const uint slices,
    const int use_max_norm, const ACC norm, const int in_place, __local ACC *scratch)
{
    const uint lid = (uint)get_local_id(0);
    const uint c = lid % tile;
    const uint s = lid / tile;
    const ulong tiles_per_row = (inner + tile - 1) / tile;
    __local ACC *part = scratch;
    __local ACC *scale = scratch + C2O_TILE_PARTS * tile;
    for (ulong t = get_group_id(0); t < n_tiles; t += get_num_groups(0)) {
        const ulong o = t / tiles_per_row;
        const ulong col = (t - o * tiles_per_row) * tile + c;
        const int valid = col < inner;
        const ulong base = o * n * inner + col;
        __global const C2O_STORAGE *xc = x + x_offset + base;
        __global C2O_STORAGE *yc = y + y_offset + base;
        c2o_tile_partial_sums(xc, 0, valid, n, inner, tile, slices, c, s, part, 0);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (s == 0) {
            ACC sc = (ACC)1;
            if (valid) {
                ACC hi, lo;
#if C2O_COMP
                c2o_sum8(c2o_tile_partials(part, tile, c), c2o_tile_partials(part + 8 * tile, tile, c), &hi, &lo);
#else
                c2o_sum8(c2o_tile_partials(part, tile, c), (C2O_ACC8)((ACC)0), &hi, &lo);
#endif
                sc = C2O_NEEDS_RESCUE(hi + lo) ? c2o_serial_rescued_scale(xc, n, inner, use_max_norm, norm)
                                               : c2o_scale(hi, lo, use_max_norm, norm);
            }
            scale[c] = sc;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const ACC sc = scale[c];
        if (valid && !(in_place && sc == (ACC)1)) {
            const C2O_VALUE sv = (C2O_VALUE)sc;
            for (ulong k = s; k < n; k += slices) {
                C2O_STORE(yc, k * inner, (C2O_VALUE)C2O_LOAD(xc, k * inner) * sv);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* the next tile reuses part and scale */
    }
}

/* A work-group per tile (see caffe2op_normalize_columns_tile_fwd).
 * scratch: (2 * C2O_TILE_PARTS + 2) * tile ACC. */
__kernel void caffe2op_normalize_columns_tile_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset,
    const ulong n_tiles, const ulong n, const ulong inner, const uint tile, const uint slices,
    __local ACC *scratch)
{
    const uint lid = (uint)get_local_id(0);
    const uint c = lid % tile;
    const uint s = lid / tile;
    const ulong tiles_per_row = (inner + tile - 1) / tile;
    __local ACC *part = scratch;
    __local ACC *cross = scratch + C2O_TILE_PARTS * tile;
    __local ACC *factors = scratch + 2 * C2O_TILE_PARTS * tile;
    for (ulong t = get_group_id(0); t < n_tiles; t += get_num_groups(0)) {
        const ulong o = t / tiles_per_row;
        const ulong col = (t - o * tiles_per_row) * tile + c;
        const int valid = col < inner;
        const ulong base = o * n * inner + col;
        __global const C2O_STORAGE *xc = x + x_offset + base;
        __global const C2O_STORAGE *dyc = dy + dy_offset + base;
        __global C2O_STORAGE *dxc = dx + dx_offset + base;
        c2o_tile_partial_sums(xc, dyc, valid, n, inner, tile, slices, c, s, part, cross);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (s == 0) {
            ACC fa = (ACC)0, fb = (ACC)0, c1 = (ACC)1, c2 = (ACC)1;
            if (valid) {
                ACC xx, xx_lo, xy, xy_lo;
#if C2O_COMP
                c2o_sum8(c2o_tile_partials(part, tile, c), c2o_tile_partials(part + 8 * tile, tile, c), &xx, &xx_lo);
                c2o_sum8(c2o_tile_partials(cross, tile, c), c2o_tile_partials(cross + 8 * tile, tile, c), &xy, &xy_lo);
#else
                c2o_sum8(c2o_tile_partials(part, tile, c), (C2O_ACC8)((ACC)0), &xx, &xx_lo);
                c2o_sum8(c2o_tile_partials(cross, tile, c), (C2O_ACC8)((ACC)0), &xy, &xy_lo);
#endif
                if (C2O_GRAD_RESCUE && C2O_NEEDS_RESCUE(xx + xx_lo)) {
                    c2o_serial_rescued_grad(xc, dyc, n, inner, &fa, &fb, &c1, &c2);
                } else {
                    c2o_grad_factors(xx, xx_lo, xy, xy_lo, 0, &fa, &fb);
                }
            }
            factors[c] = fa;
            factors[tile + c] = fb;
#if C2O_GRAD_RESCUE
            /* Column c's own partial slots are spent (no other item reads them): 2^-e = c1 c2. */
            part[c] = c1;
            part[tile + c] = c2;
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const ACC fa = factors[c];
        const ACC fb = factors[tile + c];
#if C2O_GRAD_RESCUE
        const ACC c1 = part[c];
        const ACC c2 = part[tile + c];
#endif
        if (valid) {
            for (ulong k = s; k < n; k += slices) {
                const ACC r = C2O_GRAD_AT(xc, dyc, k * inner, fa, fb, c1, c2);
                C2O_STORE(dxc, k * inner, (C2O_VALUE)r);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* the next tile reuses the scratch */
    }
}
