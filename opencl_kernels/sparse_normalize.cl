/* SPDX-License-Identifier: BSD-3-Clause
 *
 * SparseNormalize and Float16SparseNormalize: scale the rows of an embedding
 * table selected by indices to L2 norm `norm` (max-norm mode: only the rows
 * whose norm exceeds it), in place.  Caffe2's rule, per distinct row r:
 *     n = ||r||_2;  if (use_max_norm && n <= norm) or n == 0: keep r;
 *     else r *= norm / (n + 1e-12).
 *
 * Build options (besides those of caffe2op_common.h):
 *   -D INDEX_T=int|long     type of the indices;
 *   -D ACC=float|double     accumulator and scale type;
 *   -D C2O_COMPENSATED=1    float32 tables on devices whose double is slow:
 *                           sums are (hi, lo) float pairs (caffe2op_common.h);
 *   -D C2O_RESCUE=1         rows whose sum of squares overflows or underflows
 *                           are measured again, scaled (float64 tables, and
 *                           compensated float32 tables);
 *   -D C2O_V=2|4|8          elements per lane and load in the team kernel
 *                           (double, float, half): a row team has
 *                           C2O_TEAM = 64 / C2O_V lanes.
 * caffe2op.ops.sparse_normalize.opencl_impl chooses them with
 * caffe2op.opencl.programs.accumulation(dtype, info, half_in_float=True):
 *   "double"       float64 tables, and float32 tables on fast-fp64 devices;
 *   "compensated"  float32 tables elsewhere (consumer GPUs, fast_fp64=0);
 *   "float"        float16 tables (as Caffe2 and the CPU kernel).
 *
 * One canonical reduction order per accumulation mode, whatever the launch
 * shape, work-group size or device limits (so the same input gives the same
 * bits in every shape):
 *   64 partial sums, partial c adding the squares of the elements
 *   j = c, c + 64, c + 128, ... in increasing j, the row padded with zeros to
 *   a multiple of 64 elements; then one fixed tree over the 64 partials that
 *   adds neighbours, level by level (p[i] += p[i + h] for i = 0, 2h, 4h, ...,
 *   h = 1, 2, 4, ..., 32).  A lane of the team kernel owns C2O_V consecutive
 *   partials (one vector accumulator), reduces them with the first levels of
 *   the tree and the team finishes it; the serial kernel keeps all 64.
 * The CPU kernels (pyx/caffe2op_rows.h) use 8 partials and another tree: the
 * two agree within rounding of the sum (float64 sums: bit-identical float32
 * results except for rare last-bit differences), not bit for bit.
 *
 * Accumulation modes and their results:
 *   "double": a float32 row's squares are exact in double, and its norm is
 *     as accurate as the CPU kernel's; a float64 row is summed in double.
 *   "compensated": each square is split exactly (fma) and added with its
 *     error kept in a second float, so hi + lo has a relative error near
 *     2^-44 (tests/opencl/test_accumulation.py); the norm and the scale are
 *     then float pairs and each element is scaled with one fma, so a row is
 *     rounded about once per element, as on a "double" device.  Measured on
 *     PoCL (fast_fp64=0 against the default), 12,000 random rows of 3 to
 *     1,024 elements: one element in 3.1 million differed, by 1 ulp.  The
 *     norm argument is a float there (exact for the usual 1, 0.5, 2.5, ...).
 *   "float": float16 rows; the sum's rounding is below half precision.
 *
 * Overflow and underflow (C2O_RESCUE): when the sum of squares is not
 * finite (an element near the top of the range, or inf/NaN) or below
 * C2O_TINY (every square underflowed, or lost digits to it), the row is
 * measured again as the CPU kernel does: m = max |x|, e = its binary
 * exponent, the norm r * 2^e with r from the elements scaled by 2^-e, and
 * the row written as (x * 2^-e) * norm / (r + 1e-12 * 2^-e) when e > 0, else
 * x * norm / (r 2^e + 1e-12).  Rows with a NaN take the plain formula (NaN);
 * rows with an infinite element become x * 0, as in the plain formula.
 * This path is rare and taken by a whole row team or not at all; it reads
 * the row again, serially, in every lane of the team, so kernels built
 * with C2O_RESCUE have one more barrier per pass, between the plans and the
 * stores (none in the headline's "double" float32 build).
 *
 * Launch protocol (caffe2op/ops/sparse_normalize/opencl_impl.py), all on one queue:
 *   1. fill `scratch` (1 + hash_size uints, cached per queue with the
 *      `winners` bytes) with C2O_EMPTY;
 *   2. caffe2op_sparse_normalize_check, one work item per position: the
 *      bounds check (scratch[0] becomes the smallest position of an index
 *      outside [0, n_rows)) and the claim of the position's row;
 *      winners[p] = 1 for the one position per distinct row that won;
 *   3. GPUs: caffe2op_sparse_normalize_rows_fwd, work-groups of up to 256
 *      items = teams of C2O_TEAM lanes, one team per position, enough groups
 *      for all positions (a loop only past 2^20 groups); only winners load
 *      and write their row.  CPU devices (PoCL):
 *      caffe2op_sparse_normalize_serial_fwd, one-item groups, a few per
 *      core, each looping over its positions.  If scratch[0] holds a bad
 *      position, nothing is written;
 *   4. when the indices came from the device, the status word is read back
 *      without blocking; the host waits for it only before returning (and
 *      raises IndexError on a bad position).
 *
 * Duplicates: each position claims its row in an open-addressing hash set
 * of positions (scratch[1..]) with one atomic_cmpxchg per probed slot.
 * Slots go from EMPTY to a position once and never change again, and every
 * claimant of a row probes the same slot sequence, so exactly one position
 * per distinct row wins.  The claims run in their own pass, before any row
 * is read: a row is then read and written by its winner only (loading rows
 * before the claim is known, in one kernel, would have losers read a row
 * while its winner writes it -- a data race, which Oclgrind reports -- and
 * a plain read of a slot that another item sets atomically is one too).
 * The result does not depend on which position won.  The hash set holds at
 * least twice as many slots as positions (at most 2^31 positions, so that
 * the slot mask fits a uint).
 *
 * Offsets are 64-bit (ulong/size_t) everywhere: tables with more than 2^31
 * elements work.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, ~600 ns DRAM and
 * ~500 ns L2-atomic latency).  Headline: a 1,000,000 x 64 float32 table,
 * 100,000 random int64 indices, table and indices on the device,
 * constant-norm mode (every selected row is rewritten), "double" mode.
 *   Bytes: 1e6 * (1 - e^-0.1) = 95,163 distinct rows, each read once and
 *     written once from registers: 2 x 24.4 MB; indices 0.8 MB read twice
 *     (the second time from L2), winners 0.1 MB; hash set 1 MB cleared plus
 *     ~1 MB of atomics in L2.  ~51 MB of DRAM traffic: 15 us at peak.
 *   Claim pass: 100,000 items (391 groups, all resident at once): index load
 *     (600 ns) -> atomic_cmpxchg (500 ns, more when probing) -> byte store:
 *     ~1.5 us, plus ~2 us of launch gap.
 *   Row pass, latency chain per team: index and winner-flag loads together
 *     (600 ns) -> row load, one float4 per lane (600 ns) -> in-lane tree ->
 *     one barrier -> 16 local loads and the team tree -> sqrt, divide ->
 *     store: ~1.4 us, no atomic and no second global load on the chain.
 *   Launch shape and occupancy: 16 lanes x float4 per row, 16 rows per
 *     256-item group, 6,250 groups in one pass; 8 groups (2,048 items) per
 *     SM resident, 1,056 on the device: 6 waves of ~1.4 us, each with
 *     16,896 rows (8.7 MB) in flight -- enough to run near bandwidth
 *     (Little: 3.35 TB/s x 0.6 us = 2 MB in flight suffice).
 *   Predicted H100 time: row pass 15 us of DRAM traffic plus the last wave's
 *     tail, ~17-19 us; with the claim pass (its bounds check is free) and
 *     the fill: 20-25 us (60-75% of peak bandwidth), plus the asynchronous
 *     4-byte status read when the indices come from the device.  With
 *     100,000 indices into 1,000 rows (duplicate-heavy) only 1,000 teams
 *     load rows; the claims of one row serialise in L2: 10-20 us.
 *   float16: 8 lanes x 8 halves (16 bytes per lane), double: 32 lanes x 2.
 *     Rows whose length or table offset is not a multiple of C2O_V use
 *     scalar loads (same lanes, same partials, same bits).  Rows longer than
 *     C2O_REG_STRIPES x 64 elements are loaded twice (the second from L2).
 *   CPU devices (PoCL): one-item groups, 4 per core, each a serial loop
 *     over its positions (no barriers), 64 partials vectorised by PoCL.
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
#ifndef C2O_COMPENSATED
#  define C2O_COMPENSATED 0
#endif
#ifndef C2O_RESCUE
#  define C2O_RESCUE 0
#endif
#ifndef C2O_V
#  define C2O_V 4
#endif
/* Lanes per row team. */
#define C2O_TEAM (64 / C2O_V)
/* Stripes of 64 elements a lane keeps in registers between load and store. */
#ifndef C2O_REG_STRIPES
#  define C2O_REG_STRIPES 4
#endif

/* The same bits in both kernels and on the CPU: no a + b * c contraction. */
#pragma OPENCL FP_CONTRACT OFF

#define C2O_EMPTY 0xFFFFFFFFu
#define C2O_EPS 1e-12

/* Sums that may have overflowed or lost digits to underflow (C2O_RESCUE). */
#if C2O_COMPENSATED
#  define C2O_ACC_MAX FLT_MAX
#  define C2O_TINY 0x1p-100f
#else
#  define C2O_ACC_MAX DBL_MAX
#  define C2O_TINY 0x1p-900
#endif

#define C2O_CAT_(a, b) a##b
#define C2O_CAT(a, b) C2O_CAT_(a, b)
#define C2O_VALV C2O_CAT(C2O_VALUE, C2O_V) /* float4, double2, float8 (half storage) */
#define C2O_ACCV C2O_CAT(ACC, C2O_V)
#define C2O_TO_ACCV C2O_CAT(convert_, C2O_ACCV)
#define C2O_TO_VALV C2O_CAT(convert_, C2O_VALV)
#define C2O_PRIV_VLOAD C2O_CAT(vload, C2O_V)
#define C2O_PRIV_VSTORE C2O_CAT(vstore, C2O_V)
#if defined(CAFFE2OP_HALF) && CAFFE2OP_HALF
#  define C2O_VLOAD(p, i) C2O_CAT(vload_half, C2O_V)(0, (p) + (i))
#  define C2O_VSTORE(p, i, v) C2O_CAT(C2O_CAT(vstore_half, C2O_V), _rte)((v), 0, (p) + (i))
#else
#  define C2O_VLOAD(p, i) C2O_CAT(vload, C2O_V)(0, (p) + (i))
#  define C2O_VSTORE(p, i, v) C2O_CAT(vstore, C2O_V)((v), 0, (p) + (i))
#endif

/* (hi, lo) += x * x: compensated, or a plain sum in hi (lo stays 0). */
#if C2O_COMPENSATED
#  define C2O_ADD_SQUARE(T, hi, lo, x) C2O_ADD_SQUARE_COMPENSATED(T, hi, lo, x)
#  define C2O_ADD_PAIR(T, hi, lo, ohi, olo) C2O_ADD_COMPENSATED(T, hi, lo, ohi, olo)
#else
#  define C2O_ADD_SQUARE(T, hi, lo, x) ((hi) += (x) * (x))
#  define C2O_ADD_PAIR(T, hi, lo, ohi, olo) ((hi) += (ohi))
#endif

/* x * (scale + scale_lo), rounded once (compensated), or x * scale. */
#if C2O_COMPENSATED
#  define C2O_SCALE(x, scale, scale_lo) fma((x), (scale), (x) * (scale_lo))
#else
#  define C2O_SCALE(x, scale, scale_lo) ((x) * (scale))
#endif

/* The canonical tree over `width` (a power of two) consecutive partials: neighbours first. */
static void c2o_tree(ACC *hi, ACC *lo, const int width)
{
    for (int h = 1; h < width; h <<= 1) {
        for (int i = 0; i < width; i += 2 * h) {
            C2O_ADD_PAIR(ACC, hi[i], lo[i], hi[i + h], lo[i + h]);
        }
    }
}

/* Canonical sum of squares of a row of n elements, each scaled by 2^shift. */
static void c2o_row_sumsq(__global const C2O_STORAGE *table, const ulong base, const ulong n,
                          const int shift, ACC *sum_hi, ACC *sum_lo)
{
    ACC hi[64], lo[64];
    for (int c = 0; c < 64; c++) {
        hi[c] = (ACC)0;
        lo[c] = (ACC)0;
    }
    for (ulong t = 0; t < n; t += 64) {
        for (int c = 0; c < 64; c++) {
            const ulong j = t + (ulong)c;
            ACC x = j < n ? (ACC)C2O_LOAD(table, base + j) : (ACC)0;
            if (shift != 0) {
                x = ldexp(x, shift);
            }
            C2O_ADD_SQUARE(ACC, hi[c], lo[c], x);
        }
    }
    c2o_tree(hi, lo, 64);
    *sum_hi = hi[0];
    *sum_lo = lo[0];
}

/* How a row is rewritten: keep it, or x' = ldexp(x, shift) * scale. */
typedef struct {
    int keep;
    int shift;
    ACC scale;
    ACC scale_lo; /* compensated: the scale is scale + scale_lo */
} c2o_plan;

/* Caffe2's formula from the sum of squares.  (Plans are written through a
 * pointer, not returned: a returned struct becomes a noalias argument whose
 * inlining Oclgrind cannot run.) */
static void c2o_plain_plan(const ACC hi, const ACC lo, const int use_max_norm, const ACC norm, c2o_plan *plan)
{
    plan->shift = 0;
    plan->scale_lo = (ACC)0;
#if C2O_COMPENSATED
    /* The norm and the scale as float pairs, so that a row is scaled with
     * about one rounding per element, as on a "double" device: without
     * them, 40% of the elements differed from it by 1-2 ulp. */
    const float n = sqrt(hi);
    const float n_lo = (fma(-n, n, hi) + lo) / (2.0f * n);
    plan->keep = (use_max_norm && (n < norm || (n == norm && n_lo <= 0.0f))) || n == 0.0f;
    const float d = n + (float)C2O_EPS; /* (d, d_lo) = n + n_lo + eps, by TwoSum */
    const float bv = d - n;
    const float d_lo = ((n - (d - bv)) + ((float)C2O_EPS - bv)) + n_lo;
    plan->scale = norm / d;
    plan->scale_lo = (fma(-plan->scale, d, norm) - plan->scale * d_lo) / d;
#else
    const ACC n = sqrt(hi + lo);
    plan->keep = (use_max_norm && n <= norm) || n == (ACC)0;
    plan->scale = norm / (n + (ACC)C2O_EPS);
#endif
}

#if C2O_RESCUE
static int c2o_needs_rescue(const ACC hi)
{
    return !(hi <= (ACC)C2O_ACC_MAX) || hi < (ACC)C2O_TINY;
}

/* The rare row whose sum overflowed or underflowed: measured again with
 * power-of-two scaling, as pyx/caffe2op_rows.h's c2o_normalize_row_f64_scaled. */
static void c2o_rescue_plan(__global const C2O_STORAGE *table, const ulong base, const ulong n,
                            const ACC hi, const ACC lo, const int use_max_norm, const ACC norm, c2o_plan *plan)
{
    ACC m = (ACC)0;
    int nan = 0;
    for (ulong j = 0; j < n; j++) {
        const ACC a = fabs((ACC)C2O_LOAD(table, base + j));
        nan |= isnan(a);
        if (a > m) {
            m = a;
        }
    }
    plan->shift = 0;
    plan->scale_lo = (ACC)0;
    if (nan) {
        c2o_plain_plan(hi, lo, use_max_norm, norm, plan); /* NaN, as the plain formula */
        return;
    }
    if (m == (ACC)0) { /* a zero row stays zero */
        plan->keep = 1;
        plan->scale = (ACC)1;
        return;
    }
    if (isinf(m)) { /* an infinite element: the plain formula's scale, 0 */
        plan->keep = use_max_norm && !(norm < m);
        plan->scale = norm / (m + (ACC)C2O_EPS);
        return;
    }
    int e;
    (void)frexp(m, &e);
    ACC shi, slo;
    c2o_row_sumsq(table, base, n, -e, &shi, &slo);
    const ACC r = sqrt(shi + slo);
    const ACC row_norm = ldexp(r, e); /* may be inf when the elements are not */
    plan->keep = use_max_norm && row_norm <= norm;
    if (e > 0) {
        /* x * norm / (r 2^e + eps) = (x 2^-e) * norm / (r + eps 2^-e): no overflow. */
        plan->shift = -e;
        plan->scale = norm / (r + ldexp((ACC)C2O_EPS, -e));
    } else {
        plan->scale = norm / (row_norm + (ACC)C2O_EPS);
    }
}
#endif

/* The plan of a row from its canonical sum (and, rarely, a second measure). */
static void c2o_row_plan(__global const C2O_STORAGE *table, const ulong base, const ulong n,
                         const ACC hi, const ACC lo, const int use_max_norm, const ACC norm, c2o_plan *plan)
{
#if C2O_RESCUE
    if (c2o_needs_rescue(hi)) {
        c2o_rescue_plan(table, base, n, hi, lo, use_max_norm, norm, plan);
        return;
    }
#endif
    c2o_plain_plan(hi, lo, use_max_norm, norm, plan);
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

/* Every position: check its index (scratch[0] becomes the smallest position
 * of an index outside [0, n_rows)) and claim its row in the hash set
 * scratch[1 .. mask + 1]; winners[p] = 1 for the one position per distinct
 * row that won, 0 for the others (and for bad indices). */
__kernel void caffe2op_sparse_normalize_check(
    __global const INDEX_T *indices, const ulong indices_offset, const uint k,
    const long n_rows, __global volatile uint *scratch, const uint mask, __global uchar *winners)
{
    __global const INDEX_T *idx = indices + indices_offset;
    C2O_FOR_EACH(p, k) {
        const long row = (long)idx[p];
        uchar won = 0;
        if (row < 0 || row >= n_rows) {
            atomic_min(&scratch[0], (uint)p);
        } else {
            won = (uchar)c2o_claim_row(scratch + 1, mask, idx, (uint)p, row);
        }
        winners[p] = won;
    }
}

/* CPU devices: one work item per group, each looping over its positions. */
__kernel void caffe2op_sparse_normalize_serial_fwd(
    __global C2O_STORAGE *table, const ulong table_offset, const ulong block,
    __global const INDEX_T *indices, const ulong indices_offset, const uint k,
    __global const uint *scratch, __global const uchar *winners,
    const int use_max_norm, const ACC norm)
{
    __global const INDEX_T *idx = indices + indices_offset;
    /* An index out of range (found by the check kernel): write nothing. */
    const uint count = scratch[0] == C2O_EMPTY ? k : 0u;
    for (ulong p = get_global_id(0); p < count; p += get_global_size(0)) {
        if (!winners[p]) {
            continue;
        }
        const long row = (long)idx[p];
        const ulong base = table_offset + (ulong)row * block;
        ACC hi, lo;
        c2o_row_sumsq(table, base, block, 0, &hi, &lo);
        c2o_plan plan;
        c2o_row_plan(table, base, block, hi, lo, use_max_norm, norm, &plan);
        if (plan.keep) {
            continue;
        }
        for (ulong j = 0; j < block; j++) {
            ACC x = (ACC)C2O_LOAD(table, base + j);
            if (plan.shift != 0) {
                x = ldexp(x, plan.shift);
            }
            C2O_STORE(table, base + j, (C2O_VALUE)C2O_SCALE(x, plan.scale, plan.scale_lo));
        }
    }
}

/* Lane `lane`'s C2O_V elements of stripe t (zeros past the row's end). */
static C2O_VALV c2o_load_lane(__global const C2O_STORAGE *table, const ulong base, const ulong n,
                              const ulong t, const uint lane, const int vector_loads)
{
    const ulong j = t * 64 + (ulong)lane * C2O_V;
    if (vector_loads) { /* n and base are multiples of C2O_V: whole vectors */
        return j < n ? C2O_VLOAD(table, base + j) : (C2O_VALV)0;
    }
    C2O_VALUE x[C2O_V];
    for (int c = 0; c < C2O_V; c++) {
        x[c] = j + c < n ? (C2O_VALUE)C2O_LOAD(table, base + j + c) : (C2O_VALUE)0;
    }
    return C2O_PRIV_VLOAD(0, x);
}

static void c2o_store_lane(__global C2O_STORAGE *table, const ulong base, const ulong n, const ulong t,
                           const uint lane, const int vector_loads, const C2O_VALV y)
{
    const ulong j = t * 64 + (ulong)lane * C2O_V;
    if (j >= n) {
        return;
    }
    if (vector_loads) {
        C2O_VSTORE(table, base + j, y);
        return;
    }
    C2O_VALUE x[C2O_V];
    C2O_PRIV_VSTORE(y, 0, x);
    for (int c = 0; c < C2O_V; c++) {
        if (j + c < n) {
            C2O_STORE(table, base + j + c, x[c]);
        }
    }
}

static C2O_VALV c2o_rescale(const C2O_VALV v, const int shift, const ACC scale, const ACC scale_lo)
{
    C2O_ACCV a = C2O_TO_ACCV(v);
    if (shift != 0) {
        /* The vector exponent, not ldexp(vector, int): Oclgrind 21.10 shifts
         * only the first component of that form. */
        a = ldexp(a, (C2O_CAT(int, C2O_V))(shift));
    }
    return C2O_TO_VALV(C2O_SCALE(a, scale, scale_lo));
}

/* GPUs: a team of C2O_TEAM lanes per position, get_local_size(0) / C2O_TEAM
 * teams per group.  sums: get_local_size(0) ACC values (twice that when
 * compensated).  vector_loads: the row length and table offset are
 * multiples of C2O_V. */
__kernel void caffe2op_sparse_normalize_rows_fwd(
    __global C2O_STORAGE *table, const ulong table_offset, const ulong block,
    __global const INDEX_T *indices, const ulong indices_offset, const uint k,
    __global const uint *scratch, __global const uchar *winners,
    const int use_max_norm, const ACC norm, const int vector_loads, __local ACC *sums)
{
    const uint lid = (uint)get_local_id(0);
    const uint size = (uint)get_local_size(0);
    const uint lane = lid % C2O_TEAM;
    const uint team = lid / C2O_TEAM;
    const uint teams = size / C2O_TEAM;
    __global const INDEX_T *idx = indices + indices_offset;
    const ulong stripes = (block + 63) / 64;
    /* An index out of range (found by the check kernel): write nothing.  No
     * early exits: every work item of a group reaches every barrier. */
    const ulong count = scratch[0] == C2O_EMPTY ? k : 0u;
    const ulong step = (ulong)get_num_groups(0) * teams;
    /* One pass unless there are more than 2^20 groups' worth of positions;
     * the bound is the same for the whole group. */
    for (ulong first = (ulong)get_group_id(0) * teams; first < count; first += step) {
        const ulong p = first + team;
        /* Only the position that won its row loads it: no other team reads
         * a row while its winner writes it. */
        const int active = p < count && winners[p];
        ulong base = 0;
        C2O_VALV v[C2O_REG_STRIPES];
        C2O_ACCV hi = (C2O_ACCV)0, lo = (C2O_ACCV)0;
        if (active) {
            const long row = (long)idx[p];
            base = table_offset + (ulong)row * block;
#pragma unroll
            for (int t = 0; t < C2O_REG_STRIPES; t++) {
                if ((ulong)t < stripes) {
                    v[t] = c2o_load_lane(table, base, block, (ulong)t, lane, vector_loads);
                    const C2O_ACCV a = C2O_TO_ACCV(v[t]);
                    C2O_ADD_SQUARE(C2O_ACCV, hi, lo, a);
                }
            }
            for (ulong t = C2O_REG_STRIPES; t < stripes; t++) {
                const C2O_ACCV a = C2O_TO_ACCV(c2o_load_lane(table, base, block, t, lane, vector_loads));
                C2O_ADD_SQUARE(C2O_ACCV, hi, lo, a);
            }
        }
        /* This lane's partials, then its part of the tree. */
        ACC lane_hi[C2O_V], lane_lo[C2O_V];
        C2O_PRIV_VSTORE(hi, 0, lane_hi);
        C2O_PRIV_VSTORE(lo, 0, lane_lo);
        c2o_tree(lane_hi, lane_lo, C2O_V);
        sums[lid] = lane_hi[0];
#if C2O_COMPENSATED
        sums[size + lid] = lane_lo[0];
#endif
        barrier(CLK_LOCAL_MEM_FENCE);
        c2o_plan plan;
        plan.keep = 1;
        if (active) {
            /* The rest of the tree, the same in every lane of the team. */
            ACC team_hi[C2O_TEAM], team_lo[C2O_TEAM];
            for (int i = 0; i < C2O_TEAM; i++) {
                team_hi[i] = sums[team * C2O_TEAM + i];
#if C2O_COMPENSATED
                team_lo[i] = sums[size + team * C2O_TEAM + i];
#else
                team_lo[i] = (ACC)0;
#endif
            }
            c2o_tree(team_hi, team_lo, C2O_TEAM);
            c2o_row_plan(table, base, block, team_hi[0], team_lo[0], use_max_norm, norm, &plan);
        }
#if C2O_RESCUE
        /* Every lane of a team measuring its row again reads all of it:
         * no lane may write the row before the others have read it. */
        barrier(CLK_GLOBAL_MEM_FENCE);
#endif
        if (!plan.keep) {
#pragma unroll
            for (int t = 0; t < C2O_REG_STRIPES; t++) {
                if ((ulong)t < stripes) {
                    c2o_store_lane(table, base, block, (ulong)t, lane, vector_loads, c2o_rescale(v[t], plan.shift, plan.scale, plan.scale_lo));
                }
            }
            for (ulong t = C2O_REG_STRIPES; t < stripes; t++) {
                const C2O_VALV w = c2o_load_lane(table, base, block, t, lane, vector_loads);
                c2o_store_lane(table, base, block, t, lane, vector_loads, c2o_rescale(w, plan.shift, plan.scale, plan.scale_lo));
            }
        }
        if (first + step < count) {
            barrier(CLK_LOCAL_MEM_FENCE); /* sums are rewritten by the next pass */
        }
    }
}
