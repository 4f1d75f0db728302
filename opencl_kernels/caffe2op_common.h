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
 *                         that report cl_khr_fp64).
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
