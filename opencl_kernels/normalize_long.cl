/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Normalize and NormalizeGradient along the last axis for a few very long
 * vectors (issue 16 item 9): each vector is split over many work-groups and
 * reduced in the canonical order of normalize_common.h, so the results are
 * the bits of the team kernels (normalize.cl) on every launch shape.
 *
 * Why it works.  Once a vector's chunks of 8 fill all 256 slots, its
 * canonical sum is 256 x 8 = 2,048 independent serial chains: chain (s, j)
 * (lane j of slot s) adds a[8c + j] * b[8c + j] over c = s, s + 256, ...
 * in increasing c (zero past n, as c2o_load_chunk pads the last chunk);
 * then the slot tree and c2o_sum8 combine the chains.  Three launches
 * compute exactly that (caffe2op/ops/normalize/long_opencl.py):
 *
 *   1. caffe2op_normalize_long_chains_fwd / _bwd (grid-wide): a work item
 *      per chain (vector v, slot s, lane j; lanes fastest, then slots, so a
 *      warp reads 32 consecutive elements), the same C2O_ACCUM_PROD ops in
 *      the same order as c2o_team_dot's lane j of slot s; C2O_CHAIN_UNROLL
 *      chunks are loaded before they are added (in order), so that many
 *      loads are in flight per item.  The chains go to a scratch buffer
 *      (per vector: hi, then lo in compensated mode; backward <x, x> then
 *      <x, dy>).
 *   2. caffe2op_normalize_long_factors_fwd / _bwd: a team per vector (one
 *      work-group) loads its slots and runs c2o_team_tree, the very code
 *      that ends c2o_team_dot (the same ops in the same sequence), then
 *      item 0 turns the sums into the vector's factors with the team
 *      kernels' helpers (c2o_scale, c2o_serial_rescued_scale,
 *      c2o_grad_factors, c2o_serial_rescued_grad: the rare rescue
 *      re-measures the vector serially, k increasing) and stores them
 *      (forward: the scale; backward: a, b, c1, c2).
 *   3. caffe2op_normalize_long_apply_fwd / _bwd (grid-wide, 2-D: blocks of
 *      contiguous elements x vectors): y = x * (VALUE)scale, skipped in
 *      place when scale is 1,
 *      or dx = C2O_GRAD_AT, rounded as the team kernels round.
 * Slots past the vector's last chunk (forced short vectors) are zero chains
 * that the tree never adds in-item, as in c2o_team_dot.  In place is safe:
 * launch 3 runs after launches 1 and 2 have read the whole vector.
 *
 * Why not more parallelism: a chain is a rounded serial sum, and floating
 * point addition is not associative; cutting a chain into pieces summed
 * apart would change the bits of every vector longer than the split (on
 * every device at once).  So a vector offers 2,048 independent chains and
 * no more; latency is hidden by loads in flight per chain (the unroll),
 * not by more chains.
 *
 * Performance model, (8, 10M) float32 along axis 1 on an H100 SXM
 * (3.35 TB/s, 132 SMs, ~600 ns DRAM latency: ~2 MB must be in flight
 * device-wide for peak bandwidth), double accumulation (fast fp64):
 *   bytes: launch 1 reads x (320 MB), launch 3 reads x again and writes y
 *     (640 MB; 320 MB of x does not stay in a 50 MB L2); the chains are
 *     8 x 2,048 doubles (128 KB): 960 MB in all, 287 us at peak.  (The team
 *     kernel moves the same 960 MB, with 8 work-groups on 8 SMs.)
 *   launch 1: 16,384 items (64 work-groups of 256: 64 SMs, one group each,
 *     8 warps, ~40 registers) of 4,883 elements each; 16 loads in flight
 *     per item (C2O_CHAIN_UNROLL): 16,384 x 16 x 4 B = 1 MB in flight, about
 *     half of what peak needs: ~1.7 TB/s, ~190 us (the dependent double adds,
 *     ~4,900 x 4-8 cycles, ~20 us, hide under it; compensated float's ~10
 *     dependent operations per add make ~100 us).
 *   launch 2: 8 work-groups, 256 x 8 x 8 B of chains each, a 8-level tree:
 *     ~5-10 us, mostly launch latency.
 *   launch 3: 2,112 work-groups (16 per SM), each a contiguous block of
 *     ~38,000 elements of one vector, read and written 8 at a time (vload8,
 *     2 in flight per item: 64 B, up to 2,048 resident items per SM: far
 *     above the ~2 MB needed device-wide): streaming at 75-90% of peak,
 *     640 MB: 210-260 us.
 *   predicted 400-600 us for the three launches (0.8-1.6 ms with the team
 *     kernel), 2-3x faster; launch 1's loads in flight are the uncertain
 *     part.  Not yet measured on a GPU (bash .ci/gpu measures it, summing
 *     the three launches' device times).
 * When it runs (long_opencl.py): on GPU launch shapes only, for vectors of
 * at least 2^18 elements when the team launch would run fewer than 2
 * work-groups per compute unit; CAFFE2OP_OPENCL_LIMITS=long_vectors=N forces
 * it for vectors of N elements or more (tests).  It changes speed, never bits.
 */
#pragma once
#include "caffe2op_common.h"
#include "normalize_common.h"

/* Chains per vector: lane j of slot s is chain s * 8 + j. */
#define C2O_CHAINS (C2O_SLOTS * 8)
/* ACC arrays per sum of chains: hi, and lo in compensated mode. */
#define C2O_PAIR (1 + C2O_COMP)
#ifndef C2O_CHAIN_UNROLL
#  define C2O_CHAIN_UNROLL 16
#endif

/* Chain `chain` (slot chain / 8, lane chain % 8) of the vectors a, b of n elements: (hi, lo) of
 * a[k] * b[k] over k = 8c + lane, c = slot, slot + C2O_SLOTS, ... < chunks, in increasing c, a
 * lane past n reading 0 (c2o_load_chunk's padding): the ops c2o_team_dot applies to that lane.
 * C2O_CHAIN_UNROLL chunks are loaded before any of them is added. */
static void c2o_chain_dot(__global const C2O_STORAGE *a, __global const C2O_STORAGE *b, const int b_is_a,
                          const ulong n, const uint chain, ACC *hi, ACC *lo)
{
    const ulong chunks = (n + 7) / 8;
    const ulong step = (ulong)C2O_SLOTS * 8;
    ulong c = chain / 8;
    ulong k = c * 8 + chain % 8;
    ACC h = (ACC)0;
    ACC l = (ACC)0;
    for (; c + (C2O_CHAIN_UNROLL - 1) * (ulong)C2O_SLOTS < chunks;
         c += C2O_CHAIN_UNROLL * (ulong)C2O_SLOTS, k += C2O_CHAIN_UNROLL * step) {
        ACC va[C2O_CHAIN_UNROLL];
        ACC vb[C2O_CHAIN_UNROLL];
        _Pragma("unroll")
        for (uint u = 0; u < C2O_CHAIN_UNROLL; ++u) {
            va[u] = C2O_LANE(a, k + u * step, 0, n);
            vb[u] = b_is_a ? va[u] : C2O_LANE(b, k + u * step, 0, n);
        }
        _Pragma("unroll")
        for (uint u = 0; u < C2O_CHAIN_UNROLL; ++u) {
            C2O_ACCUM_PROD(ACC, h, l, va[u], vb[u]);
        }
    }
    for (; c < chunks; c += C2O_SLOTS, k += step) {
        const ACC va = C2O_LANE(a, k, 0, n);
        const ACC vb = b_is_a ? va : C2O_LANE(b, k, 0, n);
        C2O_ACCUM_PROD(ACC, h, l, va, vb);
    }
    *hi = h;
    *lo = C2O_COMP ? l : (ACC)0;
}

/* Stores a chain's (hi, lo) into the sum's chains at `sum` (lo C2O_CHAINS further in compensated mode). */
static void c2o_store_chain(__global ACC *sum, const uint chain, const ACC hi, const ACC lo)
{
    sum[chain] = hi;
#if C2O_COMP
    sum[C2O_CHAINS + chain] = lo;
#else
    (void)lo;
#endif
}

/* Launch 1, forward: one work item per chain of every vector x[v * n .. (v + 1) * n);
 * chains: C2O_PAIR * C2O_CHAINS ACC per vector. */
__kernel void caffe2op_normalize_long_chains_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, const ulong n_vectors, const ulong n,
    __global ACC *chains)
{
    const ulong g = get_global_id(0);
    if (g >= n_vectors * C2O_CHAINS) {
        return;
    }
    const ulong v = g / C2O_CHAINS;
    const uint chain = (uint)(g % C2O_CHAINS);
    __global const C2O_STORAGE *xv = x + x_offset + v * n;
    ACC hi, lo;
    c2o_chain_dot(xv, xv, 1, n, chain, &hi, &lo);
    c2o_store_chain(chains + v * (C2O_PAIR * C2O_CHAINS), chain, hi, lo);
}

/* Launch 1, backward: the chains of <x, x> and of <x, dy> (2 C2O_PAIR C2O_CHAINS ACC per vector). */
__kernel void caffe2op_normalize_long_chains_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    const ulong n_vectors, const ulong n, __global ACC *chains)
{
    const ulong g = get_global_id(0);
    if (g >= n_vectors * C2O_CHAINS) {
        return;
    }
    const ulong v = g / C2O_CHAINS;
    const uint chain = (uint)(g % C2O_CHAINS);
    __global const C2O_STORAGE *xv = x + x_offset + v * n;
    __global const C2O_STORAGE *dyv = dy + dy_offset + v * n;
    __global ACC *cv = chains + v * (2 * C2O_PAIR * C2O_CHAINS);
    ACC hi, lo;
    c2o_chain_dot(xv, xv, 1, n, chain, &hi, &lo);
    c2o_store_chain(cv, chain, hi, lo);
    c2o_chain_dot(xv, dyv, 0, n, chain, &hi, &lo);
    c2o_store_chain(cv + C2O_PAIR * C2O_CHAINS, chain, hi, lo);
}

/* The canonical sum of a vector of n elements from its chains at `sum` (launch 1's layout), by a
 * team of P items with C2O_ITEM_SLOTS * P == C2O_SLOTS (item t loads slots j P + t): every item
 * gets (hi, lo).  Every item of the work-group calls it (barriers); it ends with one. */
static void c2o_chains_sum(__global const ACC *sum, const ulong n, const c2o_team tm, __local ACC *scratch,
                           ACC *hi, ACC *lo)
{
    const uint m = (uint)min((n + 7) / 8, (ulong)C2O_SLOTS); /* slots that may be non-empty */
    C2O_ACC8 sh[C2O_ITEM_SLOTS];
#if C2O_COMP
    C2O_ACC8 sl[C2O_ITEM_SLOTS];
#endif
    C2O_UNROLL_SLOTS
    for (uint j = 0; j < C2O_ITEM_SLOTS; ++j) {
        sh[j] = vload8(j * tm.p + tm.t, sum);
#if C2O_COMP
        sl[j] = vload8(j * tm.p + tm.t, sum + C2O_CHAINS);
#endif
    }
    c2o_team_tree(sh, C2O_LOWS(sl, sh), m, tm, scratch, hi, lo);
}

/* Launch 2, forward: a work-group (one team of team_size items) per vector: factors[v] = its
 * scale.  partial: 8 ACC per work item (16 in compensated mode). */
__kernel void caffe2op_normalize_long_factors_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, const ulong n_vectors, const ulong n,
    __global const ACC *chains, __global ACC *factors, const ulong factors_offset,
    const int use_max_norm, const ACC norm, const uint team_size, __local ACC *partial)
{
    const c2o_team tm = c2o_team_of(team_size);
    for (ulong v = get_group_id(0); v < n_vectors; v += get_num_groups(0)) {
        ACC hi, lo;
        c2o_chains_sum(chains + v * (C2O_PAIR * C2O_CHAINS), n, tm, partial, &hi, &lo);
        if (tm.t == 0) {
            __global const C2O_STORAGE *xv = x + x_offset + v * n;
            factors[factors_offset + v] = C2O_NEEDS_RESCUE(hi + lo)
                                              ? c2o_serial_rescued_scale(xv, n, 1, use_max_norm, norm)
                                              : c2o_scale(hi, lo, use_max_norm, norm);
        }
    }
}

/* Launch 2, backward: factors[4 v ..] = a, b, c1, c2 of vector v (dx = C2O_GRAD_AT). */
__kernel void caffe2op_normalize_long_factors_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    const ulong n_vectors, const ulong n, __global const ACC *chains, __global ACC *factors,
    const ulong factors_offset, const uint team_size, __local ACC *partial)
{
    const c2o_team tm = c2o_team_of(team_size);
    for (ulong v = get_group_id(0); v < n_vectors; v += get_num_groups(0)) {
        __global const ACC *cv = chains + v * (2 * C2O_PAIR * C2O_CHAINS);
        ACC xx_hi, xx_lo, xy_hi, xy_lo;
        c2o_chains_sum(cv, n, tm, partial, &xx_hi, &xx_lo);
        c2o_chains_sum(cv + C2O_PAIR * C2O_CHAINS, n, tm, partial, &xy_hi, &xy_lo);
        if (tm.t == 0) {
            ACC a, b;
            ACC c1 = (ACC)1;
            ACC c2 = (ACC)1;
            if (C2O_GRAD_RESCUE && C2O_NEEDS_RESCUE(xx_hi + xx_lo)) {
                c2o_serial_rescued_grad(x + x_offset + v * n, dy + dy_offset + v * n, n, 1, &a, &b, &c1, &c2);
            } else {
                c2o_grad_factors(xx_hi, xx_lo, xy_hi, xy_lo, 0, &a, &b);
            }
            __global ACC *f = factors + factors_offset + 4 * v;
            f[0] = a;
            f[1] = b;
            f[2] = c1;
            f[3] = c2;
        }
    }
}

/* Elements (chunks of 8 where aligned) a launch-3 work item loads before it stores any. */
#define C2O_APPLY_UNROLL 4
#define C2O_APPLY_UNROLL8 2
/* Launch 3: work-group g (of dimension 0) takes the contiguous block [k, end) of its vector's n
 * units (elements, or chunks of 8), its items strided by the work-group size (consecutive items,
 * consecutive units). */
#define C2O_APPLY_BLOCK(n, k, end, stride)                                                  \
    const ulong c2o_block_ = ((n) + get_num_groups(0) - 1) / get_num_groups(0);            \
    const ulong stride = get_local_size(0);                                                \
    const ulong end = min((n), (get_group_id(0) + 1) * c2o_block_);                        \
    ulong k = get_group_id(0) * c2o_block_ + get_local_id(0)

/* y[k] = x[k] * s element by element (c2o_team_scale's rounding), over this work-group's block. */
static void c2o_apply_scale(__global const C2O_STORAGE *xv, __global C2O_STORAGE *yv, const ulong n,
                            const C2O_VALUE s)
{
    C2O_APPLY_BLOCK(n, k, end, stride);
    for (; k + (C2O_APPLY_UNROLL - 1) * stride < end; k += C2O_APPLY_UNROLL * stride) {
        C2O_VALUE r[C2O_APPLY_UNROLL];
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL; ++u) {
            r[u] = (C2O_VALUE)C2O_LOAD(xv, k + u * stride) * s;
        }
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL; ++u) {
            C2O_STORE(yv, k + u * stride, r[u]);
        }
    }
    for (; k < end; k += stride) {
        C2O_STORE(yv, k, (C2O_VALUE)C2O_LOAD(xv, k) * s);
    }
}

/* Launch 3, forward: dimension 1 is the vector, dimension 0 cuts it into blocks (C2O_APPLY_BLOCK):
 * y = x * (VALUE)scale, as c2o_team_scale (vload8 / vstore8 where both start at a multiple of 8
 * elements); in place, vectors whose scale is 1 are not written. */
__kernel void caffe2op_normalize_long_apply_fwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global C2O_STORAGE *y, const ulong y_offset,
    const ulong n_vectors, const ulong n, __global const ACC *factors, const ulong factors_offset,
    const int in_place)
{
    const ulong v = get_global_id(1);
    if (v >= n_vectors) {
        return;
    }
    const ACC scale = factors[factors_offset + v];
    if (in_place && scale == (ACC)1) {
        return;
    }
    const C2O_VALUE s = (C2O_VALUE)scale;
    __global const C2O_STORAGE *xv = x + x_offset + v * n;
    __global C2O_STORAGE *yv = y + y_offset + v * n;
    if (!(C2O_ALIGNED8(x_offset + v * n) & C2O_ALIGNED8(y_offset + v * n))) {
        c2o_apply_scale(xv, yv, n, s);
        return;
    }
    C2O_APPLY_BLOCK(n / 8, c, end, stride);
    for (; c + (C2O_APPLY_UNROLL8 - 1) * stride < end; c += C2O_APPLY_UNROLL8 * stride) {
        C2O_VALUE8 r[C2O_APPLY_UNROLL8];
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL8; ++u) {
            r[u] = C2O_LOAD8(xv, (c + u * stride) * 8) * s;
        }
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL8; ++u) {
            C2O_STORE8(yv, (c + u * stride) * 8, r[u]);
        }
    }
    for (; c < end; c += stride) {
        C2O_STORE8(yv, c * 8, C2O_LOAD8(xv, c * 8) * s);
    }
    if (get_group_id(0) == 0) { /* the last n % 8 elements */
        for (ulong k = n / 8 * 8 + get_local_id(0); k < n; k += stride) {
            C2O_STORE(yv, k, (C2O_VALUE)C2O_LOAD(xv, k) * s);
        }
    }
}

/* dx element by element over this work-group's block (see caffe2op_normalize_long_apply_bwd). */
static void c2o_apply_grad(__global const C2O_STORAGE *xv, __global const C2O_STORAGE *dyv,
                           __global C2O_STORAGE *dxv, const ulong n, const ACC a, const ACC b, const ACC c1,
                           const ACC c2)
{
    C2O_APPLY_BLOCK(n, k, end, stride);
    for (; k + (C2O_APPLY_UNROLL - 1) * stride < end; k += C2O_APPLY_UNROLL * stride) {
        C2O_VALUE r[C2O_APPLY_UNROLL];
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL; ++u) {
            r[u] = (C2O_VALUE)C2O_GRAD_AT(xv, dyv, k + u * stride, a, b, c1, c2);
        }
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL; ++u) {
            C2O_STORE(dxv, k + u * stride, r[u]);
        }
    }
    for (; k < end; k += stride) {
        C2O_STORE(dxv, k, (C2O_VALUE)C2O_GRAD_AT(xv, dyv, k, a, b, c1, c2));
    }
}

/* Launch 3, backward: dx = C2O_GRAD_AT with vector v's factors, rounded once, as the team kernel
 * (vectors of 8 where x, dy and dx start at a multiple of 8 elements).  dx may be x or dy: every
 * element is read before it is written, by the same item. */
__kernel void caffe2op_normalize_long_apply_bwd(
    __global const C2O_STORAGE *x, const ulong x_offset, __global const C2O_STORAGE *dy, const ulong dy_offset,
    __global C2O_STORAGE *dx, const ulong dx_offset, const ulong n_vectors, const ulong n,
    __global const ACC *factors, const ulong factors_offset)
{
    const ulong v = get_global_id(1);
    if (v >= n_vectors) {
        return;
    }
    __global const ACC *f = factors + factors_offset + 4 * v;
    const ACC a = f[0];
    const ACC b = f[1];
    const ACC c1 = f[2];
    const ACC c2 = f[3];
    __global const C2O_STORAGE *xv = x + x_offset + v * n;
    __global const C2O_STORAGE *dyv = dy + dy_offset + v * n;
    __global C2O_STORAGE *dxv = dx + dx_offset + v * n;
    if (!(C2O_ALIGNED8(x_offset + v * n) & C2O_ALIGNED8(dy_offset + v * n) & C2O_ALIGNED8(dx_offset + v * n))) {
        c2o_apply_grad(xv, dyv, dxv, n, a, b, c1, c2);
        return;
    }
    C2O_APPLY_BLOCK(n / 8, c, end, stride);
    for (; c + (C2O_APPLY_UNROLL8 - 1) * stride < end; c += C2O_APPLY_UNROLL8 * stride) {
        C2O_VALUE8 r[C2O_APPLY_UNROLL8];
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL8; ++u) {
            const ulong e = (c + u * stride) * 8;
            const C2O_ACC8 xs = (C2O_LOAD8_ACC(xv, e) * c1) * c2;
            r[u] = C2O_TO_VALUE8(((C2O_LOAD8_ACC(dyv, e) * a - xs * b) * c1) * c2);
        }
        _Pragma("unroll")
        for (uint u = 0; u < C2O_APPLY_UNROLL8; ++u) {
            C2O_STORE8(dxv, (c + u * stride) * 8, r[u]);
        }
    }
    for (; c < end; c += stride) {
        const C2O_ACC8 xs = (C2O_LOAD8_ACC(xv, c * 8) * c1) * c2;
        C2O_STORE8(dxv, c * 8, C2O_TO_VALUE8(((C2O_LOAD8_ACC(dyv, c * 8) * a - xs * b) * c1) * c2));
    }
    if (get_group_id(0) == 0) { /* the last n % 8 elements */
        for (ulong k = n / 8 * 8 + get_local_id(0); k < n; k += stride) {
            C2O_STORE(dxv, k, (C2O_VALUE)C2O_GRAD_AT(xv, dyv, k, a, b, c1, c2));
        }
    }
}
