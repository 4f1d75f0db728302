# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op: Caffe2's ZeroGradient, StopGradient and SparseNormalize operators, fast, on CPUs and OpenCL devices.

The package brings back Caffe2's operator model in Python: operator
definitions checked against schemas, registries of implementations per
device, a workspace of named blobs, nets, gradient makers and the
backward-pass builder.  The CPU kernels are Cython with OpenMP; the device
kernels are OpenCL C run through pyopencl.

Quick start::

    >>> import numpy as np, caffe2op
    >>> table = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)
    >>> caffe2op.sparse_normalize(table, [0, 1], norm=1.0)
    array([[0.6, 0.8],
           [0.3, 0.4]], dtype=float32)
"""

from . import opencl
from ._config import get_num_threads, set_num_threads, show_config
from ._version import __version__
from .backward import get_backward_pass
from .core import DataType, DeviceOption, DeviceType, OperatorDef, create_operator, device_scope
from .errors import MissingBlobError, SchemaError, SchemaTypeError, UnknownOperatorError
from .gradient import (
    GradientMakerBase,
    GradientNotRegisteredError,
    GradientSlice,
    get_gradient_defs,
    gradient_not_implemented_yet,
    no_gradient,
    register_gradient,
    registered_gradients,
    should_not_do_gradient,
)
from .net import Net
from .opencl import DeviceSparseMatrix, OpenCLDeviceInfo, opencl_devices
from .ops.normalize import normalize
from .ops.sparse_normalize import sparse_normalize
from .ops.stop_gradient import stop_gradient
from .ops.zero_gradient import GetZeroGradientOpGradient, zero_gradient
from .registry import (
    Operator,
    register_cpu_operator,
    register_cuda_operator,
    register_opencl_operator,
    registered_operators,
)
from .schema import Argument, OpSchema, get_schema, register_schema, registered_schemas
from .workspace import Workspace

__all__ = [
    "Argument",
    "DataType",
    "DeviceOption",
    "DeviceSparseMatrix",
    "DeviceType",
    "GetZeroGradientOpGradient",
    "GradientMakerBase",
    "GradientNotRegisteredError",
    "GradientSlice",
    "MissingBlobError",
    "Net",
    "OpSchema",
    "OpenCLDeviceInfo",
    "Operator",
    "OperatorDef",
    "SchemaError",
    "SchemaTypeError",
    "UnknownOperatorError",
    "Workspace",
    "__version__",
    "create_operator",
    "device_scope",
    "get_backward_pass",
    "get_gradient_defs",
    "get_num_threads",
    "get_schema",
    "gradient_not_implemented_yet",
    "no_gradient",
    "normalize",
    "opencl",
    "opencl_devices",
    "register_cpu_operator",
    "register_cuda_operator",
    "register_gradient",
    "register_opencl_operator",
    "register_schema",
    "registered_gradients",
    "registered_operators",
    "registered_schemas",
    "set_num_threads",
    "should_not_do_gradient",
    "show_config",
    "sparse_normalize",
    "stop_gradient",
    "zero_gradient",
]
