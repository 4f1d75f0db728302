/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient: every vector v along an axis of a dense
 * array is scaled by s(||v||), and the stored values of a CSR/CSC matrix
 * along either of its axes.  For a vector with L2 norm n (squares summed in
 * ACC):
 *     use_max_norm && n <= norm:  s = 1 (the vector is left as it is);
 *     otherwise:                  s = norm / max(n, 1e-12)
 * (Normalize is norm = 1, use_max_norm = 0: an all-zero vector stays zero,
 * a NaN norm propagates).  NormalizeGradient, with n = max(||x||, 1e-12):
 *     dx = dy / n - x * <x, dy> / n^3.
 *
 * Build options (besides those of caffe2op_common.h):
 *   -D ACC=float|double   accumulator and scale type: double for double
 *                         arrays and for float arrays on fp64 devices, float
 *                         for half arrays (the CPU kernels' precision);
 *   -D INDEX_T=int|long   type of a sparse matrix's `indices`;
 *   -D PTR_T=int|long     type of its `indptr`.
 * float and half data are multiplied in float by the scale rounded to float,
 * as the CPU kernels do; half is read with vload_half(n) and written with
 * vstore_half(n)_rte, so no cl_khr_fp16 is needed.
 *
 * Dense arrays are C-contiguous and seen as (outer, n, inner) around the
 * axis: element k of vector (o, i) is at o*n*inner + k*inner + i, so no
 * transposed copy is ever made.  Two launch shapes, chosen on the host:
 *
 *   caffe2op_normalize_fwd / _bwd: a work-group per vector (work-groups loop
 *     over the vectors).  Work item l takes the chunks of 8 elements
 *     c = l, l + wg, ... (vload8 when the vector is contiguous), keeps 8
 *     lane sums, adds them in a fixed order, and the work-group adds its
 *     items' sums with a fixed-shape tree in local memory (wg is a power of
 *     two).  Used for the last axis (inner == 1), and on GPUs for the rare
 *     shapes with too few vectors to fill the device.
 *   caffe2op_normalize_columns_fwd / _bwd: a work item per block of up to 8
 *     adjacent vectors (o, i .. i + 7): it walks down k loading 8 adjacent
 *     values at a time (one vload8), 4 rows per sweep, as the CPU kernel
 *     does.  Used for every other axis.
 *
 * Sparse matrices, with their structure checked on the host once:
 *
 *   caffe2op_normalize_segments_fwd: along the compressed direction (CSR
 *     rows, CSC columns) without duplicate entries: a work-group per stored
 *     segment data[indptr[s] .. indptr[s + 1]), reduced like a dense row.
 *   caffe2op_normalize_grouped_fwd: any other case (across the compressed
 *     direction, or duplicate entries): a work item per vector v, whose
 *     entries are data[order[p]] for p in [vptr[v], vptr[v + 1]), in the
 *     order of a stable sort computed on the host once per matrix and
 *     direction.  Duplicate entries of a vector are adjacent there; with
 *     `keys` (their position along the vector) the item adds each run of
 *     equal keys before squaring it, so a vector's norm is that of its
 *     summed entries and every stored part gets the same scale.  Each entry
 *     belongs to one vector, so the scattered writes never collide.
 *
 * Determinism: every vector is reduced by one work item or one work-group,
 * in an order fixed by the shape and the launch shape alone (never by
 * scheduling), with no atomics: the same device gives the same bits on
 * every run.  Offsets and sizes are 64-bit (ulong) everywhere.  In place
 * (y == x, `in_place` set) is safe: a vector is read completely before any
 * of it is written, by the same work item or after a barrier; vectors whose
 * scale is 1 are then not written at all.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, ~600 ns DRAM
 * latency, so ~15 KB must be in flight per SM to reach peak bandwidth).
 * float32, out of place; device time of the kernel; not yet measured on a GPU.
 *   (1M, 64) along axis 1: caffe2op_normalize_fwd, 8-item groups (8 x vload8
 *     = 64), 33,792 groups looping over ~30 vectors each.  512 MB moved:
 *     153 us at peak.  8-item groups fill a quarter of a warp and at most 32
 *     groups are resident per SM (256 items, 12.5% occupancy, ~8 KB in
 *     flight), plus 4 barriers per vector: predicted 300-500 us.
 *   (1M, 32) along axis 1: a last axis under 64 takes the columns kernel
 *     with inner = 1, a work item per row walking it with scalar loads
 *     (neighbouring items 128 B apart: 32 cache lines per warp load, reused
 *     from L1 over the next 31 loads).  256 MB: 76 us at peak; predicted
 *     150-300 us.
 *   (4096, 4096) along axis 0: 512 blocks of 8 columns are too few for 132
 *     SMs, so a work-group per column: every load is 16 KB from the previous
 *     one, a 32-byte sector per 4-byte element (8x read amplification).
 *     128 MB moved, ~0.6 GB of sectors: predicted 200-400 us.
 *   (8, 10M) along axis 1: 8 work-groups of 256 items, one per vector, on 8
 *     of 132 SMs (~80 GB/s each): 640 MB: predicted 0.8-1.6 ms.
 *   Issue 16 item 9 (vectors packed several per 256-item group, 2-D tiles
 *   for axis 0, two-pass split of very long vectors, unrolled lane sums) is
 *   predicted to bring these to 60-75% of peak; it is not written yet.
 */
#pragma once
#include "caffe2op_common.h"

#ifndef ACC
#  if defined(CAFFE2OP_FP64) && CAFFE2OP_FP64
#    define ACC double
#  else
#    define ACC float
#  endif
#endif
#ifndef INDEX_T
#  define INDEX_T long
#endif
#ifndef PTR_T
#  define PTR_T long
#endif

#define C2O_NORMALIZE_EPS 1e-12

#define C2O_PASTE_(a, b) a##b
#define C2O_PASTE(a, b) C2O_PASTE_(a, b)
#define C2O_ACC8 C2O_PASTE(ACC, 8)
#define C2O_VALUE8 C2O_PASTE(C2O_VALUE, 8)
#define C2O_TO_ACC8 C2O_PASTE(convert_, C2O_ACC8)
#define C2O_TO_VALUE8 C2O_PASTE(convert_, C2O_VALUE8)

#if defined(CAFFE2OP_HALF) && CAFFE2OP_HALF
#  define C2O_LOAD8(p, e) vload_half8(0, (p) + (e))
#  define C2O_STORE8(p, e, v) vstore_half8_rte((v), 0, (p) + (e))
#else
#  define C2O_LOAD8(p, e) vload8(0, (p) + (e))
#  define C2O_STORE8(p, e, v) vstore8((v), 0, (p) + (e))
#endif
#define C2O_LOAD_ACC(p, e) ((ACC)C2O_LOAD((p), (e)))
#define C2O_LOAD8_ACC(p, e) C2O_TO_ACC8(C2O_LOAD8((p), (e)))

/* ------------------------------------------------------------------ helpers */

/* The scale of a vector whose squares add up to sumsq (1 means: leave it). */
static ACC c2o_scale(const ACC sumsq, const int use_max_norm, const ACC norm)
{
    const ACC n = sqrt(sumsq);
    if (use_max_norm && n <= norm) {
        return (ACC)1;
    }
    /* max(n, eps) that keeps a NaN norm NaN, as numpy.maximum does. */
    return norm / (n < (ACC)C2O_NORMALIZE_EPS ? (ACC)C2O_NORMALIZE_EPS : n);
}

/* NormalizeGradient's factors: dx = dy * a - x * b. */
static void c2o_grad_factors(const ACC sxx, const ACC sxy, ACC *a, ACC *b)
{
    ACC n = sqrt(sxx);
    n = n < (ACC)C2O_NORMALIZE_EPS ? (ACC)C2O_NORMALIZE_EPS : n;
    *a = (ACC)1 / n;
    *b = sxy / (n * n * n);
}

static ACC c2o_sum8(const C2O_ACC8 v)
{
    return ((v.s0 + v.s1) + (v.s2 + v.s3)) + ((v.s4 + v.s5) + (v.s6 + v.s7));
}

/* Fixed-shape tree sum of one value per work item (wg a power of two); every
 * work item gets the total.  Ends with a barrier, so `partial` can be reused. */
static ACC c2o_group_sum(ACC value, __local ACC *partial)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    partial[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t half_width = wg >> 1; half_width > 0; half_width >>= 1) {
        if (lid < half_width) {
            partial[lid] += partial[lid + half_width];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const ACC total = partial[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

/* This work item's share of one vector's sum of squares: the vector has n
 * elements at p[k * stride]; the item takes the chunks of 8 elements
 * c = lid, lid + wg, ... and the item lid == full % wg the last, partial one. */
static ACC c2o_item_sumsq(__global const C2O_STORAGE *p, const ulong n, const ulong stride)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    const ulong full = n / 8;
    C2O_ACC8 acc = (C2O_ACC8)((ACC)0);
    ACC tail = (ACC)0;
    if (stride == 1) {
        for (ulong c = lid; c < full; c += wg) {
            const C2O_ACC8 v = C2O_LOAD8_ACC(p, c * 8);
            acc += v * v;
        }
        if (lid == full % wg) {
            for (ulong k = full * 8; k < n; ++k) {
                const ACC v = C2O_LOAD_ACC(p, k);
                tail += v * v;
            }
        }
    } else {
        for (ulong c = lid; c < full; c += wg) {
            for (int j = 0; j < 8; ++j) {
                const ACC v = C2O_LOAD_ACC(p, (c * 8 + j) * stride);
                tail += v * v;
            }
        }
        if (lid == full % wg) {
            for (ulong k = full * 8; k < n; ++k) {
                const ACC v = C2O_LOAD_ACC(p, k * stride);
                tail += v * v;
            }
        }
    }
    return c2o_sum8(acc) + tail;
}

/* y = x * s over this work item's chunks of one vector (see c2o_item_sumsq). */
static void c2o_item_scale(__global const C2O_STORAGE *x, __global C2O_STORAGE *y, const ulong n,
                           const ulong stride, const C2O_VALUE s)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    const ulong full = n / 8;
    if (stride == 1) {
        for (ulong c = lid; c < full; c += wg) {
            C2O_STORE8(y, c * 8, C2O_LOAD8(x, c * 8) * s);
        }
    } else {
        for (ulong c = lid; c < full; c += wg) {
            for (int j = 0; j < 8; ++j) {
                const ulong e = (c * 8 + j) * stride;
                C2O_STORE(y, e, (C2O_VALUE)C2O_LOAD(x, e) * s);
            }
        }
    }
    if (lid == full % wg) {
        for (ulong k = full * 8; k < n; ++k) {
            C2O_STORE(y, k * stride, (C2O_VALUE)C2O_LOAD(x, k * stride) * s);
        }
    }
}

/* ------------------------------------------------------------ dense forward */

/* A work-group per vector; vectors v = (o, i) with o = v / inner, i = v % inner.
 * partial: get_local_size(0) ACC values. */
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
        const ACC scale = c2o_scale(c2o_group_sum(c2o_item_sumsq(xv, n, inner), partial), use_max_norm, norm);
        if (!(in_place && scale == (ACC)1)) {
            c2o_item_scale(xv, y + y_offset + base, n, inner, (C2O_VALUE)scale);
        }
    }
}

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
    for (uint j = 0; j < m; ++j) {
        acc[j] = (C2O_ACC8)((ACC)0);
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
            acc[j] += (a0 * a0 + a1 * a1) + (a2 * a2 + a3 * a3);
        }
    }
    for (; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const C2O_ACC8 a0 = c2o_load_block(xb, k * inner + j * 8, j + 1 == m ? last : 8u);
            acc[j] += a0 * a0;
        }
    }
    int untouched = in_place;
    for (uint j = 0; j < m; ++j) {
        const C2O_ACC8 q = acc[j];
        acc[j] = (C2O_ACC8)(
            c2o_scale(q.s0, use_max_norm, norm), c2o_scale(q.s1, use_max_norm, norm),
            c2o_scale(q.s2, use_max_norm, norm), c2o_scale(q.s3, use_max_norm, norm),
            c2o_scale(q.s4, use_max_norm, norm), c2o_scale(q.s5, use_max_norm, norm),
            c2o_scale(q.s6, use_max_norm, norm), c2o_scale(q.s7, use_max_norm, norm));
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

/* ----------------------------------------------------------- dense backward */

/* This work item's share of <x, x> and <x, dy> for one vector (see c2o_item_sumsq). */
static void c2o_item_dots(__global const C2O_STORAGE *x, __global const C2O_STORAGE *dy, const ulong n,
                          const ulong stride, ACC *sxx, ACC *sxy)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    const ulong full = n / 8;
    C2O_ACC8 axx = (C2O_ACC8)((ACC)0);
    C2O_ACC8 axy = (C2O_ACC8)((ACC)0);
    ACC txx = (ACC)0;
    ACC txy = (ACC)0;
    if (stride == 1) {
        for (ulong c = lid; c < full; c += wg) {
            const C2O_ACC8 a = C2O_LOAD8_ACC(x, c * 8);
            const C2O_ACC8 d = C2O_LOAD8_ACC(dy, c * 8);
            axx += a * a;
            axy += a * d;
        }
    } else {
        for (ulong c = lid; c < full; c += wg) {
            for (int j = 0; j < 8; ++j) {
                const ulong e = (c * 8 + j) * stride;
                const ACC a = C2O_LOAD_ACC(x, e);
                txx += a * a;
                txy += a * C2O_LOAD_ACC(dy, e);
            }
        }
    }
    if (lid == full % wg) {
        for (ulong k = full * 8; k < n; ++k) {
            const ACC a = C2O_LOAD_ACC(x, k * stride);
            txx += a * a;
            txy += a * C2O_LOAD_ACC(dy, k * stride);
        }
    }
    *sxx = c2o_sum8(axx) + txx;
    *sxy = c2o_sum8(axy) + txy;
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
        ACC sxx, sxy, a, b;
        c2o_item_dots(xv, dyv, n, inner, &sxx, &sxy);
        sxx = c2o_group_sum(sxx, partial);
        sxy = c2o_group_sum(sxy, partial);
        c2o_grad_factors(sxx, sxy, &a, &b);
        const ulong full = n / 8;
        if (inner == 1) {
            for (ulong c = lid; c < full; c += wg) {
                const C2O_ACC8 r = C2O_LOAD8_ACC(dyv, c * 8) * a - C2O_LOAD8_ACC(xv, c * 8) * b;
                C2O_STORE8(dxv, c * 8, C2O_TO_VALUE8(r));
            }
        } else {
            for (ulong c = lid; c < full; c += wg) {
                for (int j = 0; j < 8; ++j) {
                    const ulong e = (c * 8 + j) * inner;
                    C2O_STORE(dxv, e, (C2O_VALUE)(C2O_LOAD_ACC(dyv, e) * a - C2O_LOAD_ACC(xv, e) * b));
                }
            }
        }
        if (lid == full % wg) {
            for (ulong k = full * 8; k < n; ++k) {
                const ulong e = k * inner;
                C2O_STORE(dxv, e, (C2O_VALUE)(C2O_LOAD_ACC(dyv, e) * a - C2O_LOAD_ACC(xv, e) * b));
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
    for (uint j = 0; j < m; ++j) {
        axx[j] = (C2O_ACC8)((ACC)0);
        axy[j] = (C2O_ACC8)((ACC)0);
    }
    for (ulong k = 0; k < n; ++k) {
        for (uint j = 0; j < m; ++j) {
            const uint w = j + 1 == m ? last : 8u;
            const ulong e = k * inner + j * 8;
            const C2O_ACC8 a = c2o_load_block(xb, e, w);
            axx[j] += a * a;
            axy[j] += a * c2o_load_block(dyb, e, w);
        }
    }
    for (uint j = 0; j < m; ++j) {
        ACC fa[8], fb[8], sxx[8], sxy[8];
        vstore8(axx[j], 0, sxx);
        vstore8(axy[j], 0, sxy);
        for (int l = 0; l < 8; ++l) {
            c2o_grad_factors(sxx[l], sxy[l], &fa[l], &fb[l]);
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
        const ACC scale = c2o_scale(c2o_group_sum(c2o_item_sumsq(xs, n, 1), partial), use_max_norm, norm);
        if (!(in_place && scale == (ACC)1)) {
            c2o_item_scale(xs, y + y_offset + begin, n, 1, (C2O_VALUE)scale);
        }
    }
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
    ACC sumsq = (ACC)0;
    if (has_keys) {
        ulong p = begin;
        while (p < end) {
            const long key = keys[p];
            ACC run = C2O_LOAD_ACC(x, x_offset + (ulong)order[p]);
            for (++p; p < end && keys[p] == key; ++p) {
                run += C2O_LOAD_ACC(x, x_offset + (ulong)order[p]);
            }
            sumsq += run * run;
        }
    } else {
        for (ulong p = begin; p < end; ++p) {
            const ACC a = C2O_LOAD_ACC(x, x_offset + (ulong)order[p]);
            sumsq += a * a;
        }
    }
    const ACC scale = c2o_scale(sumsq, use_max_norm, norm);
    if (in_place && scale == (ACC)1) {
        return;
    }
    const C2O_VALUE s = (C2O_VALUE)scale;
    for (ulong p = begin; p < end; ++p) {
        const ulong e = (ulong)order[p];
        C2O_STORE(y, y_offset + e, (C2O_VALUE)C2O_LOAD(x, x_offset + e) * s);
    }
}
