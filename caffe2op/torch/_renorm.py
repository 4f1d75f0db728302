# SPDX-License-Identifier: BSD-3-Clause
"""The drop-in :func:`embedding_renorm_`: torch's max-norm rule on caffe2op's parallel CPU kernel."""

import math

import numpy as np
import torch

from caffe2op import _config, _interop
from caffe2op._cpu import embedding_renorm as _kernels
from caffe2op._validation import index_vector, raise_first_bad_index

__all__ = ["embedding_renorm_", "renorm_array"]

_OP = "embedding_renorm_"
_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "uint16_t"}
_INDEX = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_KERNELS = {
    (t, i): _kernels.embedding_renorm_rows.__signatures__[f"{ts}|{ix}"]
    for t, ts in _STORAGE.items()
    for i, ix in _INDEX.items()
}


def norm_kind(norm_type):
    """``(kind, p)`` for the kernel; ValueError for a p the drop-in does not take."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)):
        raise TypeError(f"{_OP}: norm_type must be a float, got {type(norm_type).__name__}")
    p = float(norm_type)
    if math.isnan(p) or p < 0:
        raise ValueError(f"{_OP}: norm_type must be >= 0 (or inf), got {norm_type!r}")
    if p == 2.0:
        return _kernels.P_TWO, p
    if p == 1.0:
        return _kernels.P_ONE, p
    if p == math.inf:
        return _kernels.P_INF, p
    if p == 0.0:
        return _kernels.P_ZERO, p
    return _kernels.P_GENERAL, p


def renorm_array(table, indices, max_norm, norm_type):
    """Validate, then apply torch's max-norm rule to ``table[indices]`` (NumPy arrays) in place."""
    if not isinstance(table, np.ndarray):
        raise TypeError(f"{_OP}: weight must be a torch.Tensor, got {type(table).__name__}")
    if table.dtype not in _STORAGE:
        raise TypeError(f"{_OP}: weight must be float16, float32 or float64, got {table.dtype}")
    if table.ndim != 2:
        raise ValueError(f"{_OP}: weight must be 2-D (num_embeddings, embedding_dim), got shape {table.shape}")
    if not table.flags.writeable:
        raise ValueError(f"{_OP}: weight is read-only and cannot be updated in place")
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
        raise TypeError(f"{_OP}: max_norm must be a float, got {type(max_norm).__name__}")
    max_norm = float(max_norm)
    if math.isnan(max_norm) or max_norm < 0:
        raise ValueError(f"{_OP}: max_norm must be >= 0, got {max_norm!r}")
    kind, p = norm_kind(norm_type)
    indices = index_vector(_OP, "input", indices)
    if indices.size == 0:
        return
    rows = table if table.dtype != np.float16 else table.view(np.uint16)
    if not table.flags.c_contiguous:
        raise ValueError(f"{_OP}: weight must be contiguous")
    first_bad = _KERNELS[table.dtype, indices.dtype](rows, indices, max_norm, kind, p, _config.get_num_threads())
    if first_bad >= 0:
        raise_first_bad_index(_OP, "input", indices, len(table), what="weight")


def embedding_renorm_(weight, input, max_norm, norm_type=2.0):  # noqa: A002 - torch's parameter name
    """Renormalise the rows of ``weight`` that ``input`` looks up to p-norm at most ``max_norm``, in place.

    A drop-in for ``torch.embedding_renorm_`` (what ``nn.Embedding(max_norm=...)``
    and ``F.embedding(..., max_norm=...)`` call), with exactly its arithmetic
    but multi-threaded: each distinct row whose ``norm_type``-norm ``n``
    exceeds ``max_norm`` is multiplied by ``max_norm / (n + 1e-7)``.

    Parameters
    ----------
    weight : torch.Tensor
        2-D CPU embedding table (float16, float32 or float64, contiguous).
        Updated in place.  If it requires grad, call this under
        ``torch.no_grad()`` (as ``F.embedding`` does).
    input : torch.Tensor
        Indices of the rows (int32 or int64, any shape).  Repeated indices
        renormalise their row once.
    max_norm : float
        Largest norm a looked-up row may keep, >= 0.
    norm_type : float, default 2.0
        p of the p-norm: any p >= 0 or ``inf``.

    Returns
    -------
    torch.Tensor
        ``weight`` itself.

    Raises
    ------
    TypeError
        If ``weight`` is not a float16/32/64 tensor (bfloat16 included), the
        indices are not integers, or ``max_norm``/``norm_type`` are not numbers.
    ValueError
        If ``weight`` is not 2-D, not contiguous, not on the CPU, or requires
        grad in grad mode; if ``max_norm`` or ``norm_type`` is negative or NaN.
    IndexError
        If an index is negative or ``>= weight.shape[0]``; ``weight`` is then
        left bit-identical.

    See Also
    --------
    RowNormConstraint : renormalise after the optimizer step instead of during the forward pass.

    Notes
    -----
    The norm is computed the way torch's CPU reduction computes it (float32:
    eight float lanes; float64: four double lanes; float16: one float sum;
    p = 1: one sequential sum in the table's accumulation type), then rounded
    to the table's dtype, and the scale is rounded to float before the
    multiplication for float32/float16 tables, so for p = 0, 1, 2 and inf the
    results equal torch's element for element (other p agree to rounding).
    Unlike torch, negative indices are rejected (torch wraps them around).
    Inside ``torch.compile`` the call goes through the custom operator
    ``torch.ops.caffe2op.embedding_renorm_``, so it does not break the graph.
    The result does not depend on the number of threads
    (:func:`caffe2op.set_num_threads`).

    Examples
    --------
    >>> import torch, caffe2op.torch
    >>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    >>> caffe2op.torch.embedding_renorm_(w, torch.tensor([0, 1, 0]), max_norm=1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    if torch.compiler.is_compiling():
        torch.ops.caffe2op.embedding_renorm_(weight, input, float(max_norm), float(norm_type))
        return weight
    table = _interop.host_view(_OP, "weight", weight, writes=True)
    renorm_array(table, _interop.host_view(_OP, "input", input), max_norm, norm_type)
    _interop.mark_written(weight)
    return weight
