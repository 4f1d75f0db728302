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
 *   caffe2op_normalize_fwd / _bwd: the last axis (inner == 1), a team of
 *     work items per vector, several teams per work-group (work-groups loop
 *     over the vectors), summed in the canonical order below.  CPU devices
 *     run one item per group and per vector (its chunks of 8 become vector
 *     instructions); GPUs 256-item work-groups of teams of P items, P a
 *     power of two covering the vector's chunks, or one item per vector
 *     under 64 elements (normalize.cl's header has the launch shapes and
 *     their performance model).  On GPU launch shapes a few very long
 *     vectors are split over many work-groups instead, in the same order
 *     (normalize_long.cl: one work item per lane of a slot, then
 *     c2o_team_tree, then the scale): a launch shape too, with the same bits.
 *   caffe2op_normalize_columns_* (normalize_columns.cl): every other axis;
 *     each column's sum is 8 partials (partial r adds rows k = r mod 8 in
 *     increasing k) added in c2o_sum8's tree, computed by a strip kernel on
 *     CPU devices and by 2-D tiles (adjacent columns x 8 row-slices) on GPUs;
 *     that file's header has the launch shapes and their performance model.
 *
 * Sparse matrices, with their structure checked on the host once:
 *
 *   caffe2op_normalize_segments_fwd: along the compressed direction (CSR
 *     rows, CSC columns) without duplicate entries: a team per stored
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
 * length alone (c2o_team_dot: 256 slots of 8 lanes, an interleaved
 * pairwise tree, then the lanes; columns: 8 residue partials and a tree,
 * normalize_columns.cl, within row blocks and then over the blocks for
 * columns over 65,536 rows, normalize_long_columns.cl; grouped: serial), which every work-group size
 * computes exactly, with no atomics:
 * the same bits on every run, under every work-group size, local-memory
 * size and launch shape of one device and accumulation (tested across the
 * emulated limit sets, tests/opencl/test_normalize_determinism.py).  A
 * different compiler may still contract a * b + c differently.  Offsets
 * and sizes are 64-bit (ulong) everywhere.  In place (y == x, `in_place`
 * set) is safe: a vector is read completely before any of it is written,
 * by the same work item or after a barrier; vectors whose scale is 1 are
 * then not written at all.  The rescue measures a vector again serially
 * (c2o_serial_rescued_scale: k in increasing order), on every device and
 * launch shape alike.
 *
 * Performance model (H100 SXM: 3.35 TB/s HBM3, 132 SMs, ~600 ns DRAM
 * latency, so ~15 KB must be in flight per SM to reach peak bandwidth).
 * The work-group (rows and sparse segments) kernels: see normalize.cl; the
 * columns kernels: see normalize_columns.cl.
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

/* ------------------------------------------------- canonical reduction order
 *
 * A vector's sum (of squares, or of products x dy) has one order, whatever
 * the work-group size and the device: the vector is cut into chunks of 8
 * elements (the last one padded with zeros), lane j of chunk c holds element
 * 8c + j, and chunk c goes to slot c mod C2O_SLOTS, whose 8 lane sums add
 * its chunks in increasing c.  The slots are then added lane by lane in the
 * interleaved pairwise tree (slot g += slot g + h, h = C2O_SLOTS/2, ..., 1),
 * and the 8 lanes of slot 0 in c2o_sum8's halving tree.
 *
 * A team of P work items (P a power of two, a run-time kernel argument)
 * computes exactly that for one vector: item t owns slots t, t + P, ...,
 * of which it holds C2O_ITEM_SLOTS (S, a build option: S * P >= the
 * vector's non-empty slots, or S * P == C2O_SLOTS).  It walks the vector in
 * rounds of C2O_SLOTS chunks, adding chunk round + j P + t into its slot j
 * (j < S, an unrolled loop: every private-array index is a compile-time
 * constant, nothing spills to the stack); the tree levels h >= P are inside
 * the item (j += j + h / P, again unrolled), the levels h < P in the team's
 * slice of local memory.  A work-group of wg items is wg / P teams, each on
 * its own vector; every item runs the same loops, so the barriers are
 * uniform.  C2O_SOLO (P == 1: CPU devices, and GPU vectors under 64
 * elements) keeps everything in registers, with no local memory and no
 * barrier.  Empty slots are zero and are never added (adding a zero, or a
 * (0, 0) pair to a normalised compensated pair, would change no bit
 * anyway), so every P and S give the same bits.
 *
 * On GPUs chunks are read with one vload8 only where the vector starts at
 * a multiple of 8 elements (decided once per vector); elsewhere (odd
 * lengths, offset views, sparse segments) element by element, into the
 * components of an ACC8 (no private array).  CPU builds
 * (C2O_ALIGNED_VLOAD=0) use vload8 everywhere; the values, and so the bits,
 * are the same. */
#define C2O_SLOTS 256
/* The low parts of a team's slot sums where they exist (C2O_COMPENSATED), else the high ones (never read). */
#if C2O_COMP
#  define C2O_LOWS(sl, sh) (sl)
#else
#  define C2O_LOWS(sl, sh) (sh)
#endif
#ifndef C2O_ITEM_SLOTS
#  define C2O_ITEM_SLOTS 1
#endif
#ifndef C2O_SOLO
#  define C2O_SOLO 0
#endif
/* Unroll the loops over an item's slots on GPUs (S <= 8); CPU items may hold up to 256. */
#if C2O_ITEM_SLOTS <= 8
#  define C2O_UNROLL_SLOTS _Pragma("unroll")
#else
#  define C2O_UNROLL_SLOTS
#endif

/* Element k0 + j of p as ACC, zero at or past n. */
#define C2O_LANE(p, k0, j, n) ((k0) + (j) < (n) ? C2O_LOAD_ACC((p), (k0) + (j)) : (ACC)0)

/* Whether a vector starting at element `offset` may be read with vload8: on GPUs only at a
 * multiple of 8 elements (C2O_ALIGNED_VLOAD, a build option); CPUs load unaligned vectors as fast. */
#ifndef C2O_ALIGNED_VLOAD
#  define C2O_ALIGNED_VLOAD 1
#endif
#if C2O_ALIGNED_VLOAD
#  define C2O_ALIGNED8(offset) (((offset) & 7) == 0)
#else
#  define C2O_ALIGNED8(offset) 1
#endif

/* Chunk c of the vector p[k], k < n (zeros past n), as ACC; aligned: vload8 allowed (C2O_ALIGNED8). */
static C2O_ACC8 c2o_load_chunk(__global const C2O_STORAGE *p, const ulong n, const ulong c, const int aligned)
{
    const ulong k0 = c * 8;
    if (aligned && k0 + 8 <= n) {
        return C2O_LOAD8_ACC(p, k0);
    }
    return (C2O_ACC8)(C2O_LANE(p, k0, 0, n), C2O_LANE(p, k0, 1, n), C2O_LANE(p, k0, 2, n), C2O_LANE(p, k0, 3, n),
                      C2O_LANE(p, k0, 4, n), C2O_LANE(p, k0, 5, n), C2O_LANE(p, k0, 6, n), C2O_LANE(p, k0, 7, n));
}

/* Work item t's place in its team of P items, and the team's slice of local memory. */
typedef struct {
    uint t;     /* index in the team */
    uint p;     /* team size */
    uint slice; /* first local slot of the team (its first item's id) */
    uint wg;    /* work-group size (the compensated low parts follow the high ones) */
} c2o_team;

static c2o_team c2o_team_of(const uint team_size)
{
    c2o_team tm;
    const uint lid = (uint)get_local_id(0);
    tm.p = team_size;
    tm.t = lid & (team_size - 1);
    tm.slice = lid - tm.t;
    tm.wg = (uint)get_local_size(0);
    return tm;
}

/* The end of the canonical order for one vector whose slot sums a team holds: item t's
 * sh[j] (and, compensated, sl[j]) is slot j P + t, j < C2O_ITEM_SLOTS; m slots may be non-empty
 * (the others are zero).  Adds the slots in the interleaved pairwise tree, then the lanes
 * (c2o_sum8): (hi, lo) for every item of the team.  Shared by c2o_team_dot and the split launch
 * of very long vectors (normalize_long.cl), which therefore give the same bits.  Outside
 * C2O_SOLO every item of the work-group must call it; it ends with a barrier.  Without
 * C2O_COMPENSATED sl is never read (callers pass sh: C2O_LOWS). */
static void c2o_team_tree(C2O_ACC8 *sh, C2O_ACC8 *sl, const uint m, const c2o_team tm, __local ACC *scratch,
                          ACC *hi, ACC *lo)
{
    /* Tree levels h >= P: slot j P + t += slot (j + h / P) P + t, where that one is non-empty
     * (the non-empty slots of an item are its first ones: the loop stops at the first empty one). */
    C2O_UNROLL_SLOTS
    for (uint hj = C2O_ITEM_SLOTS / 2; hj > 0; hj >>= 1) {
        C2O_UNROLL_SLOTS
        for (uint j = 0; j < hj && (j + hj) * tm.p + tm.t < m; ++j) {
            C2O_ACCUM(C2O_ACC8, sh[j], sl[j], sh[j + hj], sl[j + hj]);
        }
    }
    C2O_ACC8 h8 = sh[0];
#if C2O_COMP
    C2O_ACC8 l8 = sl[0];
#else
    const C2O_ACC8 l8 = (C2O_ACC8)((ACC)0);
#endif
#if !C2O_SOLO
    /* Levels h < P in the team's slice (every team runs the same levels: uniform barriers). */
    vstore8(h8, tm.slice + tm.t, scratch);
#  if C2O_COMP
    vstore8(l8, tm.wg + tm.slice + tm.t, scratch);
#  endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = tm.p >> 1; h > 0; h >>= 1) {
        if (tm.t < h) {
            C2O_ACC8 x = vload8(tm.slice + tm.t, scratch);
            const C2O_ACC8 y = vload8(tm.slice + tm.t + h, scratch);
#  if C2O_COMP
            C2O_ACC8 xl = vload8(tm.wg + tm.slice + tm.t, scratch);
            const C2O_ACC8 yl = vload8(tm.wg + tm.slice + tm.t + h, scratch);
            C2O_ACCUM(C2O_ACC8, x, xl, y, yl);
            vstore8(xl, tm.wg + tm.slice + tm.t, scratch);
#  else
            x += y;
#  endif
            vstore8(x, tm.slice + tm.t, scratch);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    h8 = vload8(tm.slice, scratch);
#  if C2O_COMP
    l8 = vload8(tm.wg + tm.slice, scratch);
#  endif
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
    c2o_sum8(h8, l8, hi, lo);
}

/* (hi, lo) = the canonical sum over one vector of a[k] * b[k] (b_is_a: the
 * squares of a); every item of the team gets it.  a_aligned, b_aligned: the
 * vectors start at a multiple of 8 elements.  scratch: 8 ACC per work item
 * (16 in compensated mode).  Outside C2O_SOLO every item of the work-group
 * must call it (its barriers), an idle team with n == 0; it ends with a barrier. */
static void c2o_team_dot(__global const C2O_STORAGE *a, const int a_aligned, __global const C2O_STORAGE *b,
                         const int b_aligned, const int b_is_a, const ulong n, const c2o_team tm,
                         __local ACC *scratch, ACC *hi, ACC *lo)
{
    const ulong chunks = (n + 7) / 8;
    const uint m = (uint)min(chunks, (ulong)C2O_SLOTS); /* slots that may be non-empty */
    C2O_ACC8 sh[C2O_ITEM_SLOTS];
#if C2O_COMP
    C2O_ACC8 sl[C2O_ITEM_SLOTS];
#endif
    C2O_UNROLL_SLOTS
    for (uint j = 0; j < C2O_ITEM_SLOTS; ++j) {
        sh[j] = (C2O_ACC8)((ACC)0);
#if C2O_COMP
        sl[j] = (C2O_ACC8)((ACC)0);
#endif
    }
    /* The host sizes S * P for the longest vector; a longer one (a structure
     * changed behind the host's back) gets a wrong sum, never a stray access. */
#if C2O_ITEM_SLOTS > 8
    /* CPU devices (one item per vector, up to 256 slots): the item walks its chunks in order,
     * indexing its slots at run time (cheap on a CPU; GPU builds never have S > 8). */
    for (ulong c = tm.t; c < chunks; c += tm.p) {
        const uint j = min((uint)(c / tm.p) & (C2O_SLOTS / tm.p - 1), (uint)C2O_ITEM_SLOTS - 1);
        const C2O_ACC8 va = c2o_load_chunk(a, n, c, a_aligned);
        const C2O_ACC8 vb = b_is_a ? va : c2o_load_chunk(b, n, c, b_aligned);
        C2O_ACCUM_PROD(C2O_ACC8, sh[j], sl[j], va, vb);
    }
#else
    for (ulong round = 0; round < chunks; round += C2O_SLOTS) {
        C2O_UNROLL_SLOTS
        for (uint j = 0; j < C2O_ITEM_SLOTS; ++j) {
            const ulong c = round + (ulong)(j * tm.p + tm.t);
            if (c < chunks) {
                const C2O_ACC8 va = c2o_load_chunk(a, n, c, a_aligned);
                const C2O_ACC8 vb = b_is_a ? va : c2o_load_chunk(b, n, c, b_aligned);
                C2O_ACCUM_PROD(C2O_ACC8, sh[j], sl[j], va, vb);
            }
        }
    }
#endif
    c2o_team_tree(sh, C2O_LOWS(sl, sh), m, tm, scratch, hi, lo);
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

/* The scale of one vector (a team's), from its canonical sum of squares; a
 * sum that needs the rescue is measured again by every item of the team on
 * its own, in the serial rescue order (k increasing) (rare; no barrier under
 * this branch, so teams may take it or not).  Ends with a barrier outside
 * C2O_SOLO, so that in place the vector is read completely before any of it
 * is written.  Every item of the work-group must call it. */
static ACC c2o_team_vector_scale(__global const C2O_STORAGE *xv, const int aligned, const ulong n,
                                 const int use_max_norm, const ACC norm, const c2o_team tm, __local ACC *scratch)
{
    ACC hi, lo;
    c2o_team_dot(xv, aligned, xv, aligned, 1, n, tm, scratch, &hi, &lo);
    const ACC scale = C2O_NEEDS_RESCUE(hi + lo) ? c2o_serial_rescued_scale(xv, n, 1, use_max_norm, norm)
                                                : c2o_scale(hi, lo, use_max_norm, norm);
#if !C2O_SOLO
    barrier(CLK_LOCAL_MEM_FENCE); /* the rescue's reads before the team's writes */
#endif
    return scale;
}

/* y = x * s over one vector of n elements, by its team (aligned: x and y both start at a multiple of 8 elements). */
static void c2o_team_scale(__global const C2O_STORAGE *x, __global C2O_STORAGE *y, const int aligned, const ulong n,
                           const C2O_VALUE s, const c2o_team tm)
{
    if (aligned) {
        const ulong full = n / 8;
        for (ulong c = tm.t; c < full; c += tm.p) {
            C2O_STORE8(y, c * 8, C2O_LOAD8(x, c * 8) * s);
        }
        for (ulong k = full * 8 + tm.t; k < n; k += tm.p) {
            C2O_STORE(y, k, (C2O_VALUE)C2O_LOAD(x, k) * s);
        }
    } else {
        for (ulong k = tm.t; k < n; k += tm.p) {
            C2O_STORE(y, k, (C2O_VALUE)C2O_LOAD(x, k) * s);
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

/* dx = dy a - x b in ACC (scalars or ACC vectors), with the rescue's factors c1 c2 (1 unless
 * rescued: see c2o_serial_rescued_grad) as ((dy a - ((x c1) c2) b) c1) c2; rounded by the caller
 * once.  Builds without the rescue drop c1 and c2 (not evaluated: they may be undeclared there),
 * whose products by 1 would change no bit. */
#if C2O_GRAD_RESCUE
#  define C2O_GRAD_OF(x, dy, a, b, c1, c2) (((((dy) * (a)) - (((x) * (c1)) * (c2)) * (b)) * (c1)) * (c2))
#else
#  define C2O_GRAD_OF(x, dy, a, b, c1, c2) ((dy) * (a) - (x) * (b))
#endif
/* dx[k] of the vectors xv, dyv (see C2O_GRAD_OF). */
#define C2O_GRAD_AT(xv, dyv, k, a, b, c1, c2) \
    C2O_GRAD_OF(C2O_LOAD_ACC((xv), (k)), C2O_LOAD_ACC((dyv), (k)), (a), (b), (c1), (c2))

/* NormalizeGradient's factors of one vector x[k * stride], k < n, by one work item, measured
 * with x scaled by 2^-e, e from its largest magnitude (the rescue).  dx must stay representable
 * for huge vectors, where c2o_grad_factors' b would carry 2^-2e (which underflows in float once
 * e passes ~63): for e > 0, with x' = x 2^-e and n its norm, dx = (dy * a - x' * b) 2^-e with
 * a = 1 / n, b = <x', dy> / n^3, and 2^-e applied as c1 c2 (each at least 2^-64: normal
 * numbers); the caller computes ((dy * a - ((x * c1) * c2) * b) * c1) * c2.  Otherwise (a tiny
 * vector, or one that needs no scaling) c1 = c2 = 1 and a, b are c2o_grad_factors'. */
static void c2o_serial_rescued_grad(__global const C2O_STORAGE *x, __global const C2O_STORAGE *dy, const ulong n,
                                    const ulong stride, ACC *a, ACC *b, ACC *c1, ACC *c2)
{
    ACC amax = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        amax = c2o_max_nan(amax, fabs(C2O_LOAD_ACC(x, k * stride)));
    }
    const int e = c2o_rescue_exponent(amax);
    ACC xx_hi = (ACC)0, xx_lo = (ACC)0, xy_hi = (ACC)0, xy_lo = (ACC)0;
    for (ulong k = 0; k < n; ++k) {
        const ACC v = ldexp(C2O_LOAD_ACC(x, k * stride), -e);
        const ACC d = C2O_LOAD_ACC(dy, k * stride);
        C2O_ACCUM_SQ(ACC, xx_hi, xx_lo, v);
        C2O_ACCUM_PROD(ACC, xy_hi, xy_lo, v, d);
    }
    *c1 = (ACC)1;
    *c2 = (ACC)1;
    if (e <= 0) {
        c2o_grad_factors(xx_hi, xx_lo, xy_hi, xy_lo, e, a, b);
        return;
    }
    ACC norm = c2o_norm_of(xx_hi, xx_lo);
    const ACC eps = ldexp((ACC)C2O_NORMALIZE_EPS, -e);
    norm = norm < eps ? eps : norm;
    *a = (ACC)1 / norm;
    *b = (xy_hi + xy_lo) / (norm * norm * norm);
    *c1 = ldexp((ACC)1, -(e / 2));
    *c2 = ldexp((ACC)1, -(e - e / 2));
}
