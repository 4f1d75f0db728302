# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op's kernels as ``torch.library`` custom operators (namespace ``caffe2op``).

Each operator has a fake implementation (shapes and dtypes only), so
``torch.compile(fullgraph=True)`` traces through it, and each passes
``torch.library.opcheck``.  The real implementations run the same CPU
kernels as the functional API on the tensors' memory.
"""

import numpy as np
import torch

from caffe2op.ops.normalize.dense import normalize_dense, normalize_gradient_dense
from caffe2op.ops.sparse_normalize.cpu import sparse_normalize_cpu
from caffe2op.ops.stop_gradient import copy_into
from caffe2op.torch._renorm import renorm_array

__all__ = ["OPERATORS"]

#: Names of the custom operators registered under ``torch.ops.caffe2op``.
OPERATORS = ("sparse_normalize_", "normalize", "normalize_backward", "stop_gradient", "embedding_renorm_")


def _cpu_array(op, name, tensor):
    if tensor.device.type != "cpu":
        raise ValueError(f"{op}: {name} lives on {tensor.device}; caffe2op's kernels run on CPU tensors")
    if tensor.dtype == torch.bfloat16:
        raise TypeError(f"{op}: {name} is bfloat16, which caffe2op's kernels do not take; convert it (.float())")
    return tensor.detach().numpy()


def _in_place(op, tensor, work):
    """Run ``work(array)`` on ``tensor``'s memory (through a contiguous copy when it has none)."""
    if tensor.is_contiguous():
        work(_cpu_array(op, "param", tensor))
        return
    scratch = tensor.contiguous()
    work(_cpu_array(op, "param", scratch))
    tensor.copy_(scratch)


# --- SparseNormalize -----------------------------------------------------------


@torch.library.custom_op("caffe2op::sparse_normalize_", mutates_args=("param",), device_types="cpu")
def _sparse_normalize_(param: torch.Tensor, indices: torch.Tensor, use_max_norm: bool, norm: float) -> None:
    rows = _cpu_array("SparseNormalize", "indices", indices).reshape(-1)
    _in_place(
        "SparseNormalize",
        param,
        lambda table: sparse_normalize_cpu("SparseNormalize", table, rows, bool(use_max_norm), float(norm)),
    )


@_sparse_normalize_.register_fake
def _(param, indices, use_max_norm, norm):
    return None


# --- embedding_renorm_ ----------------------------------------------------------


@torch.library.custom_op("caffe2op::embedding_renorm_", mutates_args=("weight",), device_types="cpu")
def _embedding_renorm_(weight: torch.Tensor, indices: torch.Tensor, max_norm: float, norm_type: float) -> None:
    rows = _cpu_array("embedding_renorm_", "input", indices).reshape(-1)
    _in_place("embedding_renorm_", weight, lambda table: renorm_array(table, rows, max_norm, norm_type))


@_embedding_renorm_.register_fake
def _(weight, indices, max_norm, norm_type):
    return None


# --- Normalize and its gradient ----------------------------------------------------


@torch.library.custom_op("caffe2op::normalize", mutates_args=(), device_types="cpu")
def _normalize(x: torch.Tensor, axis: int) -> torch.Tensor:
    array = np.ascontiguousarray(_cpu_array("Normalize", "X", x))
    return torch.from_numpy(normalize_dense("Normalize", array, axis))


@_normalize.register_fake
def _(x, axis):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("caffe2op::normalize_backward", mutates_args=(), device_types="cpu")
def _normalize_backward(x: torch.Tensor, grad: torch.Tensor, axis: int) -> torch.Tensor:
    """NormalizeGradient: caffe2op's own kernel."""
    array = np.ascontiguousarray(_cpu_array("NormalizeGradient", "X", x))
    dy = np.ascontiguousarray(_cpu_array("NormalizeGradient", "dY", grad))
    return torch.from_numpy(normalize_gradient_dense("NormalizeGradient", array, dy, axis))


@_normalize_backward.register_fake
def _(x, grad, axis):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _normalize_setup_context(ctx, inputs, output):
    x, axis = inputs
    ctx.save_for_backward(x)
    ctx.axis = axis


def _normalize_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.caffe2op.normalize_backward(x, grad.to(x.dtype), ctx.axis), None


_normalize.register_autograd(_normalize_grad, setup_context=_normalize_setup_context)


# --- StopGradient ------------------------------------------------------------------


@torch.library.custom_op("caffe2op::stop_gradient", mutates_args=(), device_types="cpu")
def _stop_gradient(x: torch.Tensor) -> torch.Tensor:
    source = _cpu_array("StopGradient", "x", x.contiguous())
    out = np.empty(source.shape, source.dtype)
    copy_into(source, out)
    return torch.from_numpy(out)


@_stop_gradient.register_fake
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _stop_gradient_setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(output)


def _stop_gradient_grad(ctx, grad):
    return None


_stop_gradient.register_autograd(_stop_gradient_grad, setup_context=_stop_gradient_setup_context)
