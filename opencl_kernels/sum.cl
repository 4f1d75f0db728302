/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Sum: out = a + b element-wise (the operator adds n inputs with n - 1
 * launches, left to right, as NumPy does on the CPU).  Any REAL type;
 * -D CAFFE2OP_HALF=1 adds float16 in float and rounds to nearest even;
 * -D CAFFE2OP_BOOL=1 adds bools as NumPy does (logical or, REAL=uchar).
 * `out` may be `a` (in place).
 *
 * Performance model (H100 SXM, 3.35 TB/s): 12 bytes per float32 element.
 * The global size is min(n, 1,024 per compute unit) rounded up to a multiple
 * of 256 (caffe2op.opencl.elementwise_size), so a prime n still gets
 * full work-groups.  1,000,003 elements (prime): 12 MB, 3.6 us at peak;
 * 135,168 items of ~7.4 grid-stride steps: predicted 5-8 us.
 */
#pragma once
#include "caffe2op_common.h"

__kernel void caffe2op_sum_fwd(__global C2O_STORAGE *out, __global const C2O_STORAGE *a,
                               __global const C2O_STORAGE *b, const ulong n)
{
    C2O_FOR_EACH(i, n) {
#if defined(CAFFE2OP_BOOL) && CAFFE2OP_BOOL
        C2O_STORE(out, i, (C2O_VALUE)((C2O_LOAD(a, i) | C2O_LOAD(b, i)) != 0));
#else
        C2O_STORE(out, i, (C2O_VALUE)(C2O_LOAD(a, i) + C2O_LOAD(b, i)));
#endif
    }
}
