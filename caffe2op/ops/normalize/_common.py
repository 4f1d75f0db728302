# SPDX-License-Identifier: BSD-3-Clause
"""Helpers shared by the dense and sparse, CPU and OpenCL paths: dtypes, axes, views, ``scipy.sparse`` detection."""

import sys

import numpy as np

from ..._validation import require_writeable
from ...errors import SchemaError, SchemaTypeError
from .schema import _AXIS

# Kernel specialisations, picked once per dtype instead of dispatched per call.
_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "uint16_t"}
_INDEX = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_HALF = np.dtype(np.float16)


def scipy_sparse_of(value):
    """``scipy.sparse`` if ``value`` is one of its matrices or arrays, else None (never imports scipy).

    Parameters
    ----------
    value : object
        Anything.

    Returns
    -------
    module or None
        The ``scipy.sparse`` module when ``value`` is sparse.
    """
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(value):
        return sparse
    return None


def canonical_axis(op, axis, ndim):
    """``axis`` converted to an int in ``[0, ndim)``; negative values count from the end.

    Raises
    ------
    SchemaTypeError
        If ``axis`` is not an int (a bool is not an axis).
    SchemaError
        If it is out of range for rank ``ndim`` (a ValueError).
    """
    if isinstance(axis, (bool, np.bool_)):
        raise SchemaTypeError(f"{op}: argument 'axis' must be an int, got bool ({axis!r})")
    axis = _AXIS.convert(op, axis)
    if not -ndim <= axis < ndim:
        valid = f"valid axes are {-ndim}..{ndim - 1}" if ndim else "it has no axes"
        raise SchemaError(f"{op}: axis {axis} is out of range for an input of rank {ndim} ({valid})")
    return axis % ndim


def _storage(array):
    """The kernels' view of float data: float16 travels as its uint16 bit pattern."""
    return array.view(np.uint16) if array.dtype == _HALF else array


def _same_view(a, b):
    """Whether two arrays are the same memory seen the same way."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def _three_d(array, axis):
    """``array`` (C-contiguous) reshaped to ``(outer, n, inner)`` around ``axis`` (a view)."""
    shape = array.shape
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return _storage(array).reshape(outer, shape[axis], inner)


def _oriented(x, axis):
    """A C-contiguous array with x's data (``x`` itself, ``x.T``, or a copy) and the axis in it.

    Returns ``(source, axis, transposed)``: an F-contiguous ``x`` is read as
    the C-contiguous ``x.T`` without a copy; other layouts are copied.
    """
    if x.flags.c_contiguous:
        return x, axis, False
    if x.flags.f_contiguous:
        return x.T, x.ndim - 1 - axis, True
    return np.ascontiguousarray(x), axis, False


def _check_out_dense(op, x, out):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: out must be a numpy.ndarray for dense input, got {type(out).__name__}")
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out must have dtype {x.dtype} (that of the input), got {out.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"{op}: out must have shape {x.shape} (that of the input), got {out.shape}")
    require_writeable(op, "out", out)


def _run_dense(kernel_for, arrays, out, axis, extra_args):
    """Run a dense kernel on ``arrays`` (inputs, all shaped like ``out``) into ``out``.

    Inputs are read through C-contiguous views (F-contiguous ones transposed,
    others copied); ``out`` is written directly when it has the same
    orientation and does not partially overlap an input, else through a
    temporary.
    """
    arrays = [a.view(np.ndarray) for a in arrays]  # subclasses (np.matrix, memmap) as plain views
    first, kernel_axis, transposed = _oriented(arrays[0], axis)
    sources = [first]
    for other in arrays[1:]:
        view = other.T if transposed else other
        sources.append(view if view.flags.c_contiguous else np.ascontiguousarray(view))
    plain_out = out.view(np.ndarray)
    target = plain_out.T if transposed else plain_out
    direct = target.flags.c_contiguous and all(
        _same_view(target, src) or not np.may_share_memory(target, src) for src in sources
    )
    dest = target if direct else np.empty(target.shape, target.dtype)
    kernel_for[out.dtype](*[_three_d(s, kernel_axis) for s in sources], _three_d(dest, kernel_axis), *extra_args)
    if not direct:
        np.copyto(target, dest)
    return out
