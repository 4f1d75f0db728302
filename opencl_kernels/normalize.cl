/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient kernels that reduce one vector per
 * work-group (dense arrays along their last axis, the stored segments of a
 * sparse matrix) and the grouped sparse kernel.  The operator's rule, the
 * accumulation modes, the rescue and the canonical reduction order are
 * described in normalize_common.h; the columns kernels (every other axis)
 * are in normalize_columns.cl.
 *
 * Launch shapes (caffe2op/ops/normalize/dense_opencl.py _team_shape,
 * _group_launch).  A vector is reduced by a team of P work items
 * (normalize_common.h, c2o_team_dot), P chosen on the host from the
 * vector length: 1 under 64 elements (the item holds all its chunks' sums
 * in registers: no local memory, no barrier), else the power of two
 * covering its chunks of 8, at most 256.  GPU work-groups are 256 items
 * (or the kernel's cap, a power of two) = 256 / P teams, each on its own
 * vector; every item runs the same rounds (idle teams reduce an empty
 * vector), so the 2 + log2(P) barriers per round are uniform.  An item
 * holds S = C2O_ITEM_SLOTS slots (a build option, unrolled: no run-time
 * indexed private array), S P covering the longest vector's chunks or all
 * 256 slots; S <= 8 on GPUs (P grows instead).  Sparse segments: P from
 * the 90th percentile of the segment lengths, S from the longest (both
 * computed on the host once per matrix structure); one very long segment
 * among short ones makes P grow until 8 slots per item cover it (a 3,000
 * entry segment: P = 32), at the cost of idle items on the short ones.
 * CPU devices: one item per work-group and per vector, S up to 256.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs of 2,048 threads,
 * 64 K registers and 228 KB shared memory; ~600 ns DRAM latency, so ~15 KB
 * must be in flight per SM to reach peak bandwidth).  float32 data summed
 * in double (H100: fast fp64), out of place; device time of the kernel;
 * not yet measured on a GPU (bash .ci/gpu measures these four).
 *   (1M, 64) along axis 1: P = 8, S = 1: 32 vectors per 256-item group,
 *     each item one vload8 (32 B) and 8 double lane sums (~40-60
 *     registers: 4-6 groups, 1,024-1,536 items per SM, 50-75% occupancy);
 *     16 KB of local memory per group (8 doubles per item).  Latency chain
 *     per round: DRAM load (~600 ns), 3 local tree levels + 3 barriers
 *     (~100 ns), sqrt and divide in double (~100 ns), the second read of
 *     the vector (L1/L2 hit: the group's 8 KB were just read), the store.
 *     In flight: ~32-48 KB per SM, above the ~15 KB needed.  512 MB moved
 *     (x read once from DRAM, y written): 153 us at peak; predicted
 *     200-260 us (60-75% of peak; was 300-500 us with 8-item groups, a
 *     quarter of a warp each, 12.5% occupancy).
 *   (1M, 32) along axis 1: P = 1, S = 4: a work item per vector, 4
 *     vload8 into 4 ACC8 sums (~100 registers in double: ~2-3 groups of 256
 *     per SM), no local memory, no barrier.  A warp's loads touch 32 lines
 *     of 128 B each, all of whose bytes the item's 4 loads use (full
 *     sectors, more L1 wavefronts).  In flight ~64 KB per SM.  256 MB: 76 us
 *     at peak; predicted 100-130 us (was 250-450 us with 4-item groups).
 *   (8, 10M) along axis 1: with this kernel, P = 256, one vector per
 *     work-group: 8 groups on 8 of 132 SMs (~80 GB/s each), x read twice
 *     (a 40 MB vector does not stay in L2) and y written: 960 MB, 0.8-1.6
 *     ms.  GPU launch shapes no longer run it there: a few vectors of at
 *     least 2^18 elements are split over many work-groups in the same
 *     canonical order (normalize_long.cl: 2,048 chains per vector, then a
 *     team per vector, then a grid-wide scale; the same bits), predicted
 *     400-600 us (that file's header has the model).
 *   CSR matrix of 1M rows x ~10 nonzeros (float32 data, int32 indices)
 *     along the compressed axis: P = 1 (the 90th percentile, ~14 entries,
 *     is under 64), S = 4 for rows up to 32 entries: a work item per row,
 *     two indptr loads then its entries element by element (segments start
 *     at arbitrary offsets: no vload8), consecutive items on consecutive
 *     rows (a warp covers ~320 contiguous values, ~1.3 KB).  Bytes: 40 MB
 *     data read, 40 MB written, 4 MB indptr: 84 MB, 25 us at peak; two
 *     dependent DRAM trips (indptr, then data) per round of ~2,048 rows per
 *     SM, 4 rounds: ~6 us of latency.  Predicted 35-50 us (was a 2-item
 *     work-group per row: 1/16 of a warp, predicted ~150-300 us).  A
 *     matrix with a few rows of thousands of entries runs 32-item teams
 *     instead (see above): predicted 2-4x slower.
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* ------------------------------------------------------------ dense forward */

/* Teams of `team_size` items per vector along the last axis (normalize_common.h):
 * vector v is x[v * n .. (v + 1) * n).  Every item runs the same number of
 * rounds (teams past the last vector reduce an empty one), so the barriers
 * are uniform.  partial: 8 ACC values per work item (16 in compensated mode). */
__kernel void caffe2op_normalize_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    const ulong n_vectors, const ulong n,
    const int use_max_norm, const ACC norm, const int in_place, const uint team_size, __local ACC *partial)
{
    const c2o_team tm = c2o_team_of(team_size);
    const ulong teams = get_local_size(0) / team_size;
    const ulong team = get_local_id(0) / team_size;
    for (ulong first = get_group_id(0) * teams; first < n_vectors; first += get_num_groups(0) * teams) {
        const ulong v = first + team;
        const ulong len = v < n_vectors ? n : 0;
        const ulong base = v < n_vectors ? v * n : 0;
        const int aligned = C2O_ALIGNED8(x_offset + base) & C2O_ALIGNED8(y_offset + base); /* 0 or 1 each */
        __global const C2O_STORAGE *xv = x + x_offset + base;
        const ACC scale = c2o_team_vector_scale(xv, C2O_ALIGNED8(x_offset + base), len, use_max_norm, norm, tm,
                                                partial);
        if (!(in_place && scale == (ACC)1)) {
            c2o_team_scale(xv, y + y_offset + base, aligned, len, (C2O_VALUE)scale, tm);
        }
    }
}

/* Teams per vector along the last axis: dx = dy * a - x * b (computed in ACC, rounded once). */
__kernel void caffe2op_normalize_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset,
    const ulong n_vectors, const ulong n, const uint team_size, __local ACC *partial)
{
    const c2o_team tm = c2o_team_of(team_size);
    const ulong teams = get_local_size(0) / team_size;
    const ulong team = get_local_id(0) / team_size;
    for (ulong first = get_group_id(0) * teams; first < n_vectors; first += get_num_groups(0) * teams) {
        const ulong v = first + team;
        const ulong len = v < n_vectors ? n : 0;
        const ulong base = v < n_vectors ? v * n : 0;
        const int x_aligned = C2O_ALIGNED8(x_offset + base);
        const int dy_aligned = C2O_ALIGNED8(dy_offset + base);
        const int aligned = x_aligned & dy_aligned & C2O_ALIGNED8(dx_offset + base); /* 0 or 1 each */
        __global const C2O_STORAGE *xv = x + x_offset + base;
        __global const C2O_STORAGE *dyv = dy + dy_offset + base;
        __global C2O_STORAGE *dxv = dx + dx_offset + base;
        ACC xx_hi, xx_lo, xy_hi, xy_lo, a, b;
        /* dx = ((dy * a - ((x * c1) * c2) * b) * c1) * c2: c1 = c2 = 1 but for huge rescued vectors
         * (exact multiplications by 1: the bits of dy * a - x * b) */
        ACC c1 = (ACC)1;
        ACC c2 = (ACC)1;
        c2o_team_dot(xv, x_aligned, xv, x_aligned, 1, len, tm, partial, &xx_hi, &xx_lo);
        c2o_team_dot(xv, x_aligned, dyv, dy_aligned, 0, len, tm, partial, &xy_hi, &xy_lo);
        if (C2O_GRAD_RESCUE && C2O_NEEDS_RESCUE(xx_hi + xx_lo)) {
            /* Rare: every item of the team measures the vector again on its own, in the serial
             * rescue order, k increasing (no barrier under this branch). */
            c2o_serial_rescued_grad(xv, dyv, len, 1, &a, &b, &c1, &c2);
        } else {
            c2o_grad_factors(xx_hi, xx_lo, xy_hi, xy_lo, 0, &a, &b);
        }
#if !C2O_SOLO && C2O_GRAD_RESCUE
        barrier(CLK_LOCAL_MEM_FENCE); /* the rescue's reads before the team's writes (dx may be x or dy) */
#endif
        if (aligned) {
            const ulong full = len / 8;
            for (ulong k = tm.t; k < full; k += tm.p) {
                const C2O_ACC8 xs = (C2O_LOAD8_ACC(xv, k * 8) * c1) * c2;
                const C2O_ACC8 r = ((C2O_LOAD8_ACC(dyv, k * 8) * a - xs * b) * c1) * c2;
                C2O_STORE8(dxv, k * 8, C2O_TO_VALUE8(r));
            }
            for (ulong k = full * 8 + tm.t; k < len; k += tm.p) {
                C2O_STORE(dxv, k, (C2O_VALUE)C2O_GRAD_AT(xv, dyv, k, a, b, c1, c2));
            }
        } else {
            for (ulong k = tm.t; k < len; k += tm.p) {
                C2O_STORE(dxv, k, (C2O_VALUE)C2O_GRAD_AT(xv, dyv, k, a, b, c1, c2));
            }
        }
    }
}

/* ------------------------------------------------------------------- sparse */

/* Teams per stored segment data[indptr[s] .. indptr[s + 1]) (no duplicate entries). */
__kernel void caffe2op_normalize_segments_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset,
    __global C2O_STORAGE *y, const ulong y_offset,
    __global const PTR_T *indptr, const ulong indptr_offset, const ulong n_segments,
    const int use_max_norm, const ACC norm, const int in_place, const uint team_size, __local ACC *partial)
{
    const c2o_team tm = c2o_team_of(team_size);
    const ulong teams = get_local_size(0) / team_size;
    const ulong team = get_local_id(0) / team_size;
    for (ulong first = get_group_id(0) * teams; first < n_segments; first += get_num_groups(0) * teams) {
        const ulong s = first + team;
        const ulong begin = s < n_segments ? (ulong)indptr[indptr_offset + s] : 0;
        const ulong n = s < n_segments ? (ulong)indptr[indptr_offset + s + 1] - begin : 0;
        const int aligned = C2O_ALIGNED8(x_offset + begin) & C2O_ALIGNED8(y_offset + begin); /* 0 or 1 each */
        __global const C2O_STORAGE *xs = x + x_offset + begin;
        const ACC scale = c2o_team_vector_scale(xs, C2O_ALIGNED8(x_offset + begin), n, use_max_norm, norm, tm,
                                                partial);
        if (!(in_place && scale == (ACC)1)) {
            c2o_team_scale(xs, y + y_offset + begin, aligned, n, (C2O_VALUE)scale, tm);
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
