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
 *   -D ACC=float|double   accumulator and scale type, from the device's
 *                         accumulation (caffe2op.opencl.programs.accumulation;
 *                         float16 is summed like float32): double for double
 *                         arrays, and for float and half arrays on devices
 *                         with fast double precision (the CPU kernels'
 *                         precision); float with -D C2O_COMPENSATED=1
 *                         elsewhere: every sum is a (hi, lo) pair of floats
 *                         carrying the rounding error of each square, product
 *                         and addition (about 2^-44 relative at any length);
 *   -D INDEX_T=int|long   type of a sparse matrix's `indices`;
 *   -D PTR_T=int|long     type of its `indptr`.
 * float and half data are multiplied in float by the scale rounded to float,
 * as the CPU kernels do; half is read with vload_half(n) and written with
 * vstore_half(n)_rte, so no cl_khr_fp16 is needed.
 *
 * Overflow and underflow (issue 10 item 7): a sum of squares outside
 * [2^-960, DBL_MAX] (double) or [2^-64, FLT_MAX] (float), or NaN, sends the
 * vector down a rare branch that finds its largest magnitude 2^(e-1) <= a
 * < 2^e and sums the squares of its values times 2^-e (exact), as the CPU
 * kernels do: a vector of 1e200 or 1e-160 values gets its exact norm, and
 * a norm beyond the largest double its scale norm / n taken apart.  The
 * branch is uniform over a work-group (every item has the group's sum).
 * NormalizeGradient rescues only in compensated mode, where float sums of
 * float32 data overflow; the CPU sums those in double and never needs to.
 *
 * Dense arrays are C-contiguous and seen as (outer, n, inner) around the
 * axis: element k of vector (o, i) is at o*n*inner + k*inner + i, so no
 * transposed copy is ever made.  Two kernels, chosen by the shape alone
 * (the same on every device and launch shape, so the bits are too):
 *
 *   caffe2op_normalize_fwd / _bwd: the last axis (inner == 1), a work-group
 *     per vector (work-groups loop over the vectors), summed in the
 *     canonical order below.  CPU devices run one item per group (its chunks
 *     of 8 become vector instructions); GPUs a power of two covering the
 *     vector's chunks, at most 256 (C2O_SLOTS).
 *   caffe2op_normalize_columns_fwd / _bwd: every other axis, a work item per
 *     block of up to 8 adjacent vectors (o, i .. i + 7): it walks down k
 *     loading 8 adjacent values at a time (one vload8), 4 rows per sweep,
 *     as the CPU kernel does; each vector's sum has that one serial order
 *     whatever the block and strip sizes.
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
 * Determinism (issue 16): every vector's sum has one order fixed by its
 * length alone (c2o_vector_dot: 256 slots of 8 lanes, an interleaved
 * pairwise tree, then the lanes; serial for the columns and grouped
 * kernels), which every work-group size computes exactly, with no atomics:
 * the same bits on every run, under every work-group size, local-memory
 * size and launch shape of one device and accumulation (tested across the
 * emulated limit sets, tests/opencl/test_normalize_determinism.py).  A
 * different compiler may still contract a * b + c differently.  Offsets
 * and sizes are 64-bit (ulong) everywhere.  In place (y == x, `in_place`
 * set) is safe: a vector is read completely before any of it is written,
 * by the same work item or after a barrier; vectors whose scale is 1 are
 * then not written at all.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, ~600 ns DRAM
 * latency, so ~15 KB must be in flight per SM to reach peak bandwidth).
 * float32 data summed in double (H100: fast fp64), out of place; device
 * time of the kernel; not yet measured on a GPU.
 *   (1M, 64) along axis 1: caffe2op_normalize_fwd, 8-item groups (8 x vload8
 *     = 64), 33,792 groups looping over ~30 vectors each.  512 MB moved:
 *     153 us at peak.  8-item groups fill a quarter of a warp and at most 32
 *     groups are resident per SM (256 items, 12.5% occupancy, ~8 KB in
 *     flight), plus 5 barriers per vector (8-lane local tree): predicted
 *     300-500 us.
 *   (1M, 32) along axis 1: now the work-group kernel too (4-item groups, the
 *     same canonical order as every other shape), an eighth of a warp per
 *     group and 32 groups per SM (128 items, ~4 KB in flight): 256 MB, 76 us
 *     at peak; predicted 250-450 us (was 150-300 us with a work item per row
 *     in the columns kernel, whose serial order differed from the CPU
 *     shape's; a per-row kernel in the canonical order would restore that).
 *   (4096, 4096) along axis 0: the columns kernel on every device: 512 work
 *     items of 8 adjacent columns (a warp reads 1 KB per row, coalesced),
 *     16 warps on 16 of 132 SMs, each keeping 4 rows x 1 KB in flight
 *     (~15 KB per SM, near its peak): 128 MB at ~12% of the device's peak:
 *     predicted 250-450 us (was 200-400 us with a work-group per column).
 *   (8, 10M) along axis 1: 8 work-groups of 256 items, one per vector, on 8
 *     of 132 SMs (~80 GB/s each): 640 MB: predicted 0.8-1.6 ms.
 *   Issue 16 item 9 (vectors packed several per 256-item group, 2-D tiles
 *   for axis 0, two-pass split of very long vectors) is predicted to bring
 *   these to 60-75% of peak; it is not written yet.  The lane sums are
 *   ACC8 vectors in registers (no run-time indexed array on GPUs:
 *   C2O_ITEM_SLOTS is 1 for 256-item groups).
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
#if defined(C2O_COMPENSATED) && C2O_COMPENSATED
#  define C2O_COMP 1
#else
#  define C2O_COMP 0
#endif

#define C2O_NORMALIZE_EPS 1e-12

#define C2O_PASTE_(a, b) a##b
#define C2O_PASTE(a, b) C2O_PASTE_(a, b)
#define C2O_ACC2 C2O_PASTE(ACC, 2)
#define C2O_ACC4 C2O_PASTE(ACC, 4)
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

/* ------------------------------------------------------------ accumulation
 *
 * Every sum is a pair (hi, lo).  With C2O_COMPENSATED (ACC float) it is a
 * double-float sum (caffe2op_common.h); otherwise lo stays 0 and hi is a
 * plain ACC sum, so one source serves both.  T is ACC or an ACC vector. */
#if C2O_COMP
/* (hi, lo) += x * y, the product split exactly by fma (TwoProd) and added by TwoSum. */
#  define C2O_ADD_PRODUCT_COMPENSATED(T, hi, lo, x, y)                   \
    do {                                                                  \
        const T c2o_p_ = (x) * (y);                                       \
        const T c2o_pe_ = fma((x), (y), -c2o_p_);                         \
        const T c2o_s_ = (hi) + c2o_p_;                                   \
        const T c2o_b_ = c2o_s_ - (hi);                                   \
        const T c2o_e_ = (((hi) - (c2o_s_ - c2o_b_)) + (c2o_p_ - c2o_b_)) + ((lo) + c2o_pe_); \
        (hi) = c2o_s_ + c2o_e_;                                           \
        (lo) = c2o_e_ - ((hi) - c2o_s_);                                  \
    } while (0)
#  define C2O_ACCUM_SQ(T, hi, lo, x) C2O_ADD_SQUARE_COMPENSATED(T, hi, lo, x)
#  define C2O_ACCUM_PROD(T, hi, lo, x, y) C2O_ADD_PRODUCT_COMPENSATED(T, hi, lo, x, y)
#  define C2O_ACCUM(T, hi, lo, ohi, olo) C2O_ADD_COMPENSATED(T, hi, lo, ohi, olo)
#  define C2O_ACCUM_SQ4(T, hi, lo, a0, a1, a2, a3) \
    do {                                       \
        C2O_ACCUM_SQ(T, hi, lo, a0);           \
        C2O_ACCUM_SQ(T, hi, lo, a1);           \
        C2O_ACCUM_SQ(T, hi, lo, a2);           \
        C2O_ACCUM_SQ(T, hi, lo, a3);           \
    } while (0)
#else
#  define C2O_ACCUM_SQ(T, hi, lo, x) ((hi) += (x) * (x))
#  define C2O_ACCUM_PROD(T, hi, lo, x, y) ((hi) += (x) * (y))
#  define C2O_ACCUM(T, hi, lo, ohi, olo) ((hi) += (ohi))
#  define C2O_ACCUM_SQ4(T, hi, lo, a0, a1, a2, a3) ((hi) += ((a0) * (a0) + (a1) * (a1)) + ((a2) * (a2) + (a3) * (a3)))
#endif

/* Sums of squares outside [C2O_SUMSQ_TINY, C2O_SUMSQ_HUGE] (or NaN, which is
 * what an overflowed compensated sum becomes) may have overflowed, or lost
 * precision to squares below the smallest normal number: the vector's norm is
 * measured again with its values scaled by a power of two (the nrm2 remedy of
 * the CPU kernels, pyx/normalize.pyx), on a branch only such vectors take.
 * For double the CPU kernels' bound; for float the same margin (sums below
 * 2^-64 hold squares that may have lost bits: relative error under n 2^-86). */
#if C2O_COMP || !(defined(CAFFE2OP_FP64) && CAFFE2OP_FP64)
#  define C2O_SUMSQ_TINY 0x1p-64f
#  define C2O_SUMSQ_HUGE FLT_MAX
#else
#  define C2O_SUMSQ_TINY 0x1p-960
#  define C2O_SUMSQ_HUGE DBL_MAX
#endif
#define C2O_NEEDS_RESCUE(s) (!((s) >= (ACC)C2O_SUMSQ_TINY && (s) <= (ACC)C2O_SUMSQ_HUGE))

/* ------------------------------------------------------------------ helpers */

/* Normalize's rule for a vector whose L2 norm is n (1 means: leave it). */
static ACC c2o_scale_of_norm(const ACC n, const int use_max_norm, const ACC norm)
{
    if (use_max_norm && n <= norm) {
        return (ACC)1;
    }
    /* max(n, eps) that keeps a NaN norm NaN, as numpy.maximum does. */
    return norm / (n < (ACC)C2O_NORMALIZE_EPS ? (ACC)C2O_NORMALIZE_EPS : n);
}

/* The square root of the sum hi + lo (in compensated mode one Newton step on
 * the float root adds the low part: the norm is then rounded once). */
static ACC c2o_norm_of(const ACC hi, const ACC lo)
{
    const ACC r = sqrt(hi);
#if C2O_COMP
    if (r > (ACC)0 && r <= FLT_MAX) {
        return r + (fma(-r, r, hi) + lo) / (r + r);
    }
#endif
    return r;
}

/* The scale of a vector whose squares add up to hi + lo (not needing rescue). */
static ACC c2o_scale(const ACC hi, const ACC lo, const int use_max_norm, const ACC norm)
{
#if C2O_COMP
    if (use_max_norm) {
        /* hi + lo <= norm^2, compared exactly on normalised pairs. */
        const ACC p = norm * norm;
        const ACC pe = fma(norm, norm, -p);
        if (hi < p || (hi == p && lo <= pe)) {
            return (ACC)1;
        }
    }
#endif
    return c2o_scale_of_norm(c2o_norm_of(hi, lo), use_max_norm, norm);
}

/* The scale of a vector whose norm is c2o_norm_of(hi, lo) * 2^e, which may
 * exceed the largest ACC (rescued vectors). */
static ACC c2o_scale_split(const ACC hi, const ACC lo, const int e, const int use_max_norm, const ACC norm)
{
    const ACC m = c2o_norm_of(hi, lo);
    const ACC n = ldexp(m, e);
    if (isinf(n)) {
        /* Beyond every representable norm (norm and eps are finite): norm / n, taken apart. */
        return ldexp(norm / m, -e);
    }
    return c2o_scale_of_norm(n, use_max_norm, norm);
}

/* max that keeps a NaN (a NaN value makes the vector's norm NaN). */
static ACC c2o_max_nan(const ACC a, const ACC b)
{
    return (b > a || b != b) ? b : a;
}

/* NormalizeGradient's factors: dx = dy * a - x * b, for x scaled by 2^-e
 * (e = 0: not scaled).  sxx = <x, x>, sxy = <x, dy> as pairs. */
static void c2o_grad_factors(const ACC xx_hi, const ACC xx_lo, const ACC xy_hi, const ACC xy_lo, const int e,
                             ACC *a, ACC *b)
{
    ACC n = c2o_norm_of(xx_hi, xx_lo);
    const ACC eps = e ? ldexp((ACC)C2O_NORMALIZE_EPS, -e) : (ACC)C2O_NORMALIZE_EPS;
    n = n < eps ? eps : n;
    *a = ldexp((ACC)1 / n, -e);
    *b = ldexp((xy_hi + xy_lo) / (n * n * n), -2 * e);
}

/* (hi, lo) = the sum of the 8 lanes of (h, l), in a fixed halving tree. */
static void c2o_sum8(const C2O_ACC8 h, const C2O_ACC8 l, ACC *hi, ACC *lo)
{
    C2O_ACC4 h4 = h.lo;
    C2O_ACC4 l4 = l.lo;
    C2O_ACCUM(C2O_ACC4, h4, l4, h.hi, l.hi);
    C2O_ACC2 h2 = h4.lo;
    C2O_ACC2 l2 = l4.lo;
    C2O_ACCUM(C2O_ACC2, h2, l2, h4.hi, l4.hi);
    ACC h1 = h2.x;
    ACC l1 = l2.x;
    C2O_ACCUM(ACC, h1, l1, h2.y, l2.y);
    *hi = h1;
    *lo = C2O_COMP ? l1 : (ACC)0;
}

/* Fixed-shape tree max (c2o_max_nan) of one value per work item; every work item gets it. */
static ACC c2o_group_max(const ACC value, __local ACC *partial)
{
    const size_t lid = get_local_id(0);
    const size_t wg = get_local_size(0);
    partial[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t half_width = wg >> 1; half_width > 0; half_width >>= 1) {
        if (lid < half_width) {
            partial[lid] = c2o_max_nan(partial[lid], partial[lid + half_width]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const ACC total = partial[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

/* ------------------------------------------------- canonical reduction order
 *
 * A vector's sum (of squares, or of products x dy) has one order, whatever
 * the work-group size and the device: the vector is cut into chunks of 8
 * elements (the last one padded with zeros), lane j of chunk c holds element
 * 8c + j, and chunk c goes to slot c mod C2O_SLOTS, whose 8 lane sums add
 * its chunks in increasing c.  The slots are then added lane by lane in the
 * interleaved pairwise tree (slot g += slot g + h, h = C2O_SLOTS/2, ..., 1),
 * and the 8 lanes of slot 0 in c2o_sum8's halving tree.  A work-group of wg
 * items (a power of two <= C2O_SLOTS) computes exactly that: item l owns
 * slots l, l + wg, ...; the levels h >= wg of the tree are inside an item,
 * the others in local memory.  Empty slots are zero and adding a zero (or a
 * (0, 0) pair to a normalised compensated pair) changes no bit, so a work
 * item skips the slots past the vector's end.  One work item per vector (CPU
 * devices, wg = 1) walks the chunks in order and keeps every slot. */
#define C2O_SLOTS 256
/* Slots one work item may hold: C2O_SLOTS / (its work-group size), chosen on
 * the host per launch (1 on GPUs with 256-item groups: no private array). */
#ifndef C2O_ITEM_SLOTS
#  define C2O_ITEM_SLOTS C2O_SLOTS
#endif

/* Chunk c of the vector p[k * stride], k < n (zeros past n), as ACC, times 2^-e. */
static C2O_ACC8 c2o_load_chunk(__global const C2O_STORAGE *p, const ulong n, const ulong stride, const ulong c,
                               const int e)
{
    const ulong k0 = c * 8;
    if (stride == 1 && k0 + 8 <= n && e == 0) {
        return C2O_LOAD8_ACC(p, k0);
    }
    /* Scalar ldexp (the rescue): Oclgrind's vector ldexp(double8, int) returned zeros. */
    ACC t[8];
#pragma unroll
    for (uint j = 0; j < 8; ++j) {
        t[j] = k0 + j < n ? ldexp(C2O_LOAD_ACC(p, (k0 + j) * stride), -e) : (ACC)0;
    }
    return vload8(0, t);
}

/* (hi, lo) = the canonical sum over one vector of a[k] * b[k] (a scaled by
 * 2^-e; b_is_a: the squares of a), every work item of the group gets it.
 * scratch: 8 ACC per work item (16 in compensated mode); ends with a barrier. */
static void c2o_vector_dot(__global const C2O_STORAGE *a, __global const C2O_STORAGE *b, const int b_is_a,
                           const ulong n, const ulong stride, const int e, __local ACC *scratch, ACC *hi, ACC *lo)
{
    const uint lid = (uint)get_local_id(0);
    const uint wg = (uint)get_local_size(0);
    const ulong chunks = (n + 7) / 8;
    const uint m = (uint)min(chunks, (ulong)C2O_SLOTS); /* slots that may be non-empty */
    C2O_ACC8 h8 = (C2O_ACC8)((ACC)0);
    C2O_ACC8 l8 = (C2O_ACC8)((ACC)0);
#if C2O_ITEM_SLOTS == 1
    /* One slot per item (wg == C2O_SLOTS, or a vector of at most wg chunks). */
    for (ulong c = lid; c < chunks; c += max(wg, (uint)C2O_SLOTS)) {
        const C2O_ACC8 va = c2o_load_chunk(a, n, stride, c, e);
        const C2O_ACC8 vb = b_is_a ? va : c2o_load_chunk(b, n, stride, c, 0);
        C2O_ACCUM_PROD(C2O_ACC8, h8, l8, va, vb);
    }
#else
    C2O_ACC8 sh[C2O_ITEM_SLOTS];
#  if C2O_COMP
    C2O_ACC8 sl[C2O_ITEM_SLOTS];
#  endif
    const uint per = (uint)C2O_SLOTS / wg;
    /* My non-empty slots: j < mine.  The host sizes C2O_ITEM_SLOTS for the
     * longest vector; the clamps keep a longer one (a structure changed
     * behind the host's back) inside the array: a wrong sum, never a stray write. */
    const uint mine = min(lid < m ? (m - lid + wg - 1) / wg : 0u, (uint)C2O_ITEM_SLOTS);
    for (uint j = 0; j < mine; ++j) {
        sh[j] = (C2O_ACC8)((ACC)0);
#  if C2O_COMP
        sl[j] = (C2O_ACC8)((ACC)0);
#  endif
    }
    for (ulong c = lid; c < chunks; c += wg) {
        const uint j = min((uint)(c / wg) & (per - 1), (uint)C2O_ITEM_SLOTS - 1);
        const C2O_ACC8 va = c2o_load_chunk(a, n, stride, c, e);
        const C2O_ACC8 vb = b_is_a ? va : c2o_load_chunk(b, n, stride, c, 0);
        C2O_ACCUM_PROD(C2O_ACC8, sh[j], sl[j], va, vb);
    }
    for (uint h = (uint)C2O_SLOTS / 2; h >= wg; h >>= 1) {
        const uint hj = h / wg;
        for (uint j = 0; j < hj && j + hj < mine; ++j) {
            C2O_ACCUM(C2O_ACC8, sh[j], sl[j], sh[j + hj], sl[j + hj]);
        }
    }
    if (mine) {
        h8 = sh[0];
#  if C2O_COMP
        l8 = sl[0];
#  endif
    }
#endif
    /* Unconditional barriers (also for wg == 1): PoCL's compiler fails on barriers under a branch here. */
    vstore8(h8, lid, scratch);
#if C2O_COMP
    vstore8(l8, wg + lid, scratch);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = wg >> 1; h > 0; h >>= 1) {
        if (lid < h) {
            C2O_ACC8 x = vload8(lid, scratch);
            const C2O_ACC8 y = vload8(lid + h, scratch);
#if C2O_COMP
            C2O_ACC8 xl = vload8(wg + lid, scratch);
            const C2O_ACC8 yl = vload8(wg + lid + h, scratch);
            C2O_ACCUM(C2O_ACC8, x, xl, y, yl);
            vstore8(xl, wg + lid, scratch);
#else
            x += y;
#endif
            vstore8(x, lid, scratch);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    h8 = vload8(0, scratch);
#if C2O_COMP
    l8 = vload8(wg, scratch);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    c2o_sum8(h8, l8, hi, lo);
}

/* This work item's share of the largest |value| of one vector (any order: max is exact). */
static ACC c2o_item_amax(__global const C2O_STORAGE *p, const ulong n, const ulong stride)
{
    ACC amax = (ACC)0;
    for (ulong k = get_local_id(0); k < n; k += get_local_size(0)) {
        amax = c2o_max_nan(amax, fabs(C2O_LOAD_ACC(p, k * stride)));
    }
    return amax;
}

/* Exponent e of 2^e >= amax > 2^(e-1) for a finite non-zero amax; 0 (no
 * scaling) for 0, an infinity or NaN, whose norms need none. */
static int c2o_rescue_exponent(const ACC amax)
{
    int e = 0;
    if (amax > (ACC)0 && amax <= (ACC)C2O_SUMSQ_HUGE) {
        frexp(amax, &e);
    }
    return e;
}

/* The scale of one vector (a work-group's), rescued if its sum needs it.
 * Every work item of the group takes the same branches. */
static ACC c2o_group_vector_scale(__global const C2O_STORAGE *xv, const ulong n, const ulong stride,
                                  const int use_max_norm, const ACC norm, __local ACC *partial)
{
    ACC hi, lo;
    c2o_vector_dot(xv, xv, 1, n, stride, 0, partial, &hi, &lo);
    if (!C2O_NEEDS_RESCUE(hi + lo)) {
        return c2o_scale(hi, lo, use_max_norm, norm);
    }
    const ACC amax = c2o_group_max(c2o_item_amax(xv, n, stride), partial);
    const int e = c2o_rescue_exponent(amax);
    if (e == 0) {
        return c2o_scale_of_norm(amax, use_max_norm, norm); /* all zero, an infinity, or NaN */
    }
    c2o_vector_dot(xv, xv, 1, n, stride, e, partial, &hi, &lo);
    return c2o_scale_split(hi, lo, e, use_max_norm, norm);
}

/* The rescued scale of one vector of n values at p[k * stride], by one work item. */
static ACC c2o_serial_rescued_scale(__global const C2O_STORAGE *p, const ulong n, const ulong stride,
                                    const int use_max_norm, const ACC norm)
{
    ACC amax = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        amax = c2o_max_nan(amax, fabs(C2O_LOAD_ACC(p, k * stride)));
    }
    const int e = c2o_rescue_exponent(amax);
    if (e == 0) {
        return c2o_scale_of_norm(amax, use_max_norm, norm);
    }
    ACC hi = (ACC)0;
    ACC lo = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        const ACC v = ldexp(C2O_LOAD_ACC(p, k * stride), -e);
        C2O_ACCUM_SQ(ACC, hi, lo, v);
    }
    return c2o_scale_split(hi, lo, e, use_max_norm, norm);
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

/* ----------------------------------------------------------- dense backward
 *
 * The CPU kernels sum <x, x> and <x, dy> in double without rescue, which
 * cannot overflow for float32 and float16 data; in compensated (float) mode
 * these sums can, so there the rare vectors whose <x, x> needs it are
 * measured again with x scaled by 2^-e (dx is homogeneous: see
 * c2o_grad_factors).  float64 data behave as on the CPU. */
#if C2O_COMP
#  define C2O_GRAD_RESCUE 1
#else
#  define C2O_GRAD_RESCUE 0
#endif

/* NormalizeGradient's factors of one column x[k * inner], k < n, by one work
 * item, with x scaled by 2^-e, e from its largest magnitude (the rescue). */
static void c2o_serial_rescued_grad(__global const C2O_STORAGE *x, __global const C2O_STORAGE *dy, const ulong n,
                                    const ulong inner, ACC *a, ACC *b)
{
    ACC amax = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        amax = c2o_max_nan(amax, fabs(C2O_LOAD_ACC(x, k * inner)));
    }
    const int e = c2o_rescue_exponent(amax);
    ACC xx_hi = (ACC)0, xx_lo = (ACC)0, xy_hi = (ACC)0, xy_lo = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        const ACC v = ldexp(C2O_LOAD_ACC(x, k * inner), -e);
        const ACC d = C2O_LOAD_ACC(dy, k * inner);
        C2O_ACCUM_SQ(ACC, xx_hi, xx_lo, v);
        C2O_ACCUM_PROD(ACC, xy_hi, xy_lo, v, d);
    }
    c2o_grad_factors(xx_hi, xx_lo, xy_hi, xy_lo, e, a, b);
}
