/* SPDX-License-Identifier: BSD-3-Clause
 *
 * SparseNormalize and Float16SparseNormalize: scale the rows of an embedding
 * table selected by indices to L2 norm `norm` (max-norm mode: only the rows
 * whose norm exceeds it), in place.  Caffe2's rule, per distinct row r:
 *     n = ||r||_2;  if (use_max_norm && n <= norm) or n == 0: keep r;
 *     else r *= norm / (n + 1e-12).
 *
 * Build options (besides those of caffe2op_common.h):
 *   -D INDEX_T=int|long   type of the indices;
 *   -D ACC=float|double   accumulator and scale type (double for double
 *                         tables, and for float tables on fp64 devices, as
 *                         the CPU kernels do; float for half tables).
 *
 * Launch protocol (caffe2op/ops/sparse_normalize/opencl_impl.py), all on one queue:
 *   1. fill `scratch` (1 + hash_size uints) with C2O_EMPTY;
 *   2. optional caffe2op_sparse_normalize_check: scratch[0] becomes the
 *      smallest position of an index outside [0, n_rows);
 *   3. caffe2op_sparse_normalize_fwd: each work-group takes index positions
 *      p = group, group + groups, ... and handles the row of each.  On GPUs
 *      a work-group has a power-of-two number of items >= the row length
 *      (capped at 256) and reduces in local memory; on CPU devices (PoCL) a
 *      work-group is one work item and there are a few per core.  If
 *      scratch[0] holds a bad position, no work-group writes anything.
 *
 * Duplicates: the work-group of position p claims row indices[p] in an
 * open-addressing hash set of positions (scratch[1..]), with one
 * atomic_cmpxchg per probed slot.  Slots go from EMPTY to a position once
 * and never change again, and every claimant of a row probes the same slot
 * sequence, so exactly one position per distinct row wins; the others do
 * nothing.  The winner normalises the row alone, with a fixed-shape tree
 * reduction in local memory: the result does not depend on which position
 * won, on scheduling or on the number of duplicates.  The hash set holds
 * at least twice as many slots as positions (at most 2^31 positions, so
 * that the slot mask fits a uint), so a free slot always exists.
 *
 * Offsets are 64-bit (ulong/size_t) everywhere: tables with more than 2^31
 * elements work.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, ~600 ns DRAM and
 * ~500 ns L2-atomic latency).  Headline: a 1,000,000 x 64 float32 table,
 * 100,000 random int64 indices, table and indices on the device,
 * constant-norm mode (every selected row is rewritten).
 *   Bytes: 1e6 * (1 - e^-0.1) = 95,163 distinct rows, each read once and
 *     written once (the scaling loop's second read hits L1): 2 x 24.4 MB;
 *     indices 0.8 MB; hash set 1 MB cleared plus ~1 MB of atomics in L2.
 *     ~51 MB of DRAM traffic: 15 us at peak bandwidth.
 *   Latency chain per position (one work-group): index load (600 ns) ->
 *     lane 0's atomic_cmpxchg (500 ns, more when probing) -> barrier -> row
 *     load (600 ns) -> log2(wg) + 1 barriers of the tree -> sqrt, divide ->
 *     barrier -> store: ~2.2 us, with nothing else in flight for that group.
 *   Launch shape and occupancy: 64-item groups for a 64-wide row (the next
 *     power of two >= the row, capped at 256); min(k, 256 per compute unit)
 *     = 33,792 groups; 32 groups (2,048 items) resident per SM, 4,224 on the
 *     device, so each resident group runs ~24 positions one after another.
 *   Predicted H100 time: 24 x 2.2 us = 50-70 us for the kernel (20-30% of
 *     peak bandwidth: latency-bound), plus the bounds check (~5 us) and the
 *     4-byte status read when the indices come from the device.  With
 *     100,000 indices into 1,000 rows (duplicate-heavy), rows are 0.5 MB and
 *     the claims dominate: 25-45 us.  The launch shape of issue 16 item 8
 *     (16 lanes x float4 per row, 16 rows per 256-item group, loads issued
 *     before the claim) is predicted at 20-25 us; it is not written yet.
 *   CPU devices (PoCL): one-item groups, 4 per core, each a serial loop
 *     over its positions (no barriers; vectorised by PoCL).
 */
#pragma once
#include "caffe2op_common.h"

#ifndef INDEX_T
#  define INDEX_T long
#endif
#ifndef ACC
#  if defined(CAFFE2OP_FP64) && CAFFE2OP_FP64
#    define ACC double
#  else
#    define ACC float
#  endif
#endif

#define C2O_EMPTY 0xFFFFFFFFu

/* Record the smallest position whose index is negative or >= n_rows. */
__kernel void caffe2op_sparse_normalize_check(
    __global const INDEX_T *indices, const ulong indices_offset, const ulong k,
    const long n_rows, __global volatile uint *scratch)
{
    C2O_FOR_EACH(p, k) {
        const long row = (long)indices[indices_offset + p];
        if (row < 0 || row >= n_rows) {
            atomic_min(&scratch[0], (uint)p);
        }
    }
}

/* 1 if position p is the first to claim `row` in the hash set, else 0. */
static int c2o_claim_row(__global volatile uint *slots, const uint mask,
                         __global const INDEX_T *indices, const uint p, const long row)
{
    uint s = (uint)(((ulong)row * 0x9E3779B97F4A7C15UL) >> 32) & mask;
    for (;;) {
        const uint holder = atomic_cmpxchg(&slots[s], C2O_EMPTY, p);
        if (holder == C2O_EMPTY) {
            return 1;
        }
        if ((long)indices[holder] == row) {
            return 0;
        }
        s = (s + 1u) & mask;
    }
}

/* partial: get_local_size(0) ACC values; the work-group size is a power of two. */
__kernel void caffe2op_sparse_normalize_fwd(
    __global C2O_STORAGE *table, const ulong table_offset, const ulong block,
    __global const INDEX_T *indices, const ulong indices_offset, const uint k,
    __global volatile uint *scratch, const uint mask,
    const int use_max_norm, const ACC norm, __local ACC *partial)
{
    __local int claimed;
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    __global const INDEX_T *idx = indices + indices_offset;

    /* An index out of range (found by the check kernel): write nothing.  No
     * early exits: every work item of a group reaches every barrier. */
    const uint count = scratch[0] == C2O_EMPTY ? k : 0u;
    for (ulong p = get_group_id(0); p < count; p += get_num_groups(0)) {
        const long row = (long)idx[p];
        if (lid == 0) {
            claimed = c2o_claim_row(scratch + 1, mask, idx, (uint)p, row);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const int mine = claimed; /* the same for the whole work-group */
        const ulong base = table_offset + (ulong)row * block;
        ACC sum = (ACC)0;
        if (mine) {
            for (ulong j = lid; j < block; j += wg) {
                const ACC x = (ACC)C2O_LOAD(table, base + j);
                sum += x * x;
            }
        }
        partial[lid] = sum;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (size_t half_width = wg >> 1; half_width > 0; half_width >>= 1) {
            if (lid < half_width) {
                partial[lid] += partial[lid + half_width];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        const ACC n = sqrt(partial[0]);
        barrier(CLK_LOCAL_MEM_FENCE); /* partial[0] and `claimed` are rewritten by the next position */
        /* Skip rows under the limit, and all-zero rows (they stay zero). */
        if (mine && !((use_max_norm && n <= norm) || n == (ACC)0)) {
            const ACC scale = norm / (n + (ACC)1e-12);
            for (ulong j = lid; j < block; j += wg) {
                C2O_STORE(table, base + j, (C2O_VALUE)((ACC)C2O_LOAD(table, base + j) * scale));
            }
        }
    }
}
