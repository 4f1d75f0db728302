/* SPDX-License-Identifier: BSD-3-Clause
 *
 * ConstantFill: every element of `out` becomes `value`.  The kernel copies
 * bit patterns: -D REAL=uchar|ushort|uint|ulong by element size, the value
 * already converted to the blob's dtype on the host.  So float16 and float64
 * blobs are filled exactly, without fp16 or fp64 arithmetic.
 */
#pragma once
#include "caffe2op_common.h"

__kernel void caffe2op_constant_fill_fwd(__global REAL *out, const REAL value, const ulong n)
{
    C2O_FOR_EACH(i, n) {
        out[i] = value;
    }
}
