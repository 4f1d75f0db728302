/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Definitions shared by caffe2op's OpenCL kernels.
 *
 * Build options (set by caffe2op.opencl.get_program, one program per set):
 *   -D REAL=<type>        element type of the arrays (float, double, int, ...);
 *   -D CAFFE2OP_HALF=1    the arrays hold float16: they are declared ``half``,
 *                         read with vload_half, written with vstore_half_rte
 *                         and computed in float, so no cl_khr_fp16 is needed
 *                         (the NVIDIA driver does not report it);
 *   -D CAFFE2OP_FP64=1    enable double precision (only passed for devices
 *                         that report cl_khr_fp64);
 *   -D C2O_COMPENSATED=1  sums of squares are kept as (hi, lo) float pairs
 *                         (caffe2op.opencl.programs.accumulation chooses it
 *                         where double precision is slow); see
 *                         C2O_ADD_SQUARE_COMPENSATED below.
 * Every macro has a default so that each .cl file compiles on its own.
 */
#pragma once

#if defined(CAFFE2OP_FP64) && CAFFE2OP_FP64
#  if defined(cl_khr_fp64)
#    pragma OPENCL EXTENSION cl_khr_fp64 : enable
#  elif defined(cl_amd_fp64)
#    pragma OPENCL EXTENSION cl_amd_fp64 : enable
#  endif
#endif

#ifndef REAL
#  define REAL float
#endif

#if defined(CAFFE2OP_HALF) && CAFFE2OP_HALF
/* float16 storage, float arithmetic.  Offsets are size_t (64-bit). */
#  define C2O_STORAGE half
#  define C2O_VALUE float
#  define C2O_LOAD(p, i) vload_half((size_t)(i), (p))
#  define C2O_STORE(p, i, v) vstore_half_rte((v), (size_t)(i), (p))
#else
#  define C2O_STORAGE REAL
#  define C2O_VALUE REAL
#  define C2O_LOAD(p, i) ((p)[(i)])
#  define C2O_STORE(p, i, v) ((p)[(i)] = (v))
#endif

/* Grid-stride loop over n elements: any global size covers any n (64-bit). */
#define C2O_FOR_EACH(i, n) for (size_t i = get_global_id(0); i < (size_t)(n); i += get_global_size(0))

/* Compensated sums of squares in float (C2O_COMPENSATED=1), for devices whose
 * double precision is slow or missing.  A sum is an unevaluated pair
 * hi + lo of floats (or float vectors: T is the type), kept normalised
 * (|lo| <= ulp(hi) / 2) as in double-float arithmetic: each square is split
 * exactly by fma, added by Knuth's TwoSum, and the pair renormalised by
 * FastTwoSum.  The relative error of hi + lo stays near 2^-44 whatever the
 * length (measured: 2e-13 over 2^20 squares spanning 16 binades, against
 * 1e-3 for a plain float sum and 6e-7 for Kahan/Neumaier summation, whose
 * correction term itself drifts when the rounding errors share a sign).
 * Contraction must stay off: a fused hi + x * x would break TwoSum. */
#if defined(C2O_COMPENSATED) && C2O_COMPENSATED
#  pragma OPENCL FP_CONTRACT OFF
#endif
/* (hi, lo) += x * x */
#define C2O_ADD_SQUARE_COMPENSATED(T, hi, lo, x)                          \
    do {                                                                  \
        const T c2o_p_ = (x) * (x);                                       \
        const T c2o_pe_ = fma((x), (x), -c2o_p_);                         \
        const T c2o_s_ = (hi) + c2o_p_;                                   \
        const T c2o_b_ = c2o_s_ - (hi);                                   \
        const T c2o_e_ = (((hi) - (c2o_s_ - c2o_b_)) + (c2o_p_ - c2o_b_)) + ((lo) + c2o_pe_); \
        (hi) = c2o_s_ + c2o_e_;                                           \
        (lo) = c2o_e_ - ((hi) - c2o_s_);                                  \
    } while (0)
/* (hi, lo) += (other_hi, other_lo): combines two partial compensated sums. */
#define C2O_ADD_COMPENSATED(T, hi, lo, other_hi, other_lo)                \
    do {                                                                  \
        const T c2o_s_ = (hi) + (other_hi);                               \
        const T c2o_b_ = c2o_s_ - (hi);                                   \
        const T c2o_e_ = (((hi) - (c2o_s_ - c2o_b_)) + ((other_hi) - c2o_b_)) + ((lo) + (other_lo)); \
        (hi) = c2o_s_ + c2o_e_;                                           \
        (lo) = c2o_e_ - ((hi) - c2o_s_);                                  \
    } while (0)
