# SPDX-License-Identifier: BSD-3-Clause
"""The Normalize and NormalizeGradient operators, registered for the CPU, OpenCL and CUDA devices."""

import numpy as np

from ..._validation import FLOAT_DTYPES, require_dtype
from ...registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ._common import canonical_axis
from .dense import check_gradient_inputs, normalize_dense, normalize_gradient_dense
from .dense_opencl import _enqueue_dense, check_dense_opencl, check_gradient_opencl


def _require_array(op, name, value):
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
    return value


@register_cpu_operator("Normalize")
class NormalizeCPU(Operator):
    """Normalize on the CPU (in place or out of place, any axis, float16/32/64)."""

    def run_on_device(self):
        x = _require_array(self.type, "X", self.input(0))
        require_dtype(self.type, "X", x, FLOAT_DTYPES)
        axis = canonical_axis(self.type, self.arg("axis"), x.ndim)
        normalize_dense(self.type, x, axis, out=self.output(0, x.shape, x.dtype))


@register_cpu_operator("NormalizeGradient")
class NormalizeGradientCPU(Operator):
    """NormalizeGradient on the CPU."""

    def run_on_device(self):
        x, dy = self.input(0), self.input(1)
        axis = check_gradient_inputs(self.type, x, dy, self.arg("axis"))
        normalize_gradient_dense(self.type, x, dy, axis, out=self.output(0, x.shape, x.dtype))


@register_opencl_operator("Normalize")
@register_cuda_operator("Normalize")
class NormalizeOpenCL(Operator):
    """Normalize on an OpenCL device: one kernel launch, in place or out of place, any axis."""

    def run_on_device(self):
        x = self.input(0)
        axis = check_dense_opencl(self.type, x, self.arg("axis"), self.backend)
        out = self.output(0, x.shape, x.dtype)
        if x.size:
            _enqueue_dense(self.type, self.backend.queue, self.backend, [x], out, axis, (False, 1.0))


@register_opencl_operator("NormalizeGradient")
@register_cuda_operator("NormalizeGradient")
class NormalizeGradientOpenCL(Operator):
    """NormalizeGradient on an OpenCL device: one kernel launch."""

    def run_on_device(self):
        x, dy = self.input(0), self.input(1)
        axis = check_gradient_opencl(self.type, x, dy, self.arg("axis"), self.backend)
        out = self.output(0, x.shape, x.dtype)
        if x.size:
            _enqueue_dense(self.type, self.backend.queue, self.backend, [x, dy], out, axis, None)
