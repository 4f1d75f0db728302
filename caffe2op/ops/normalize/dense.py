# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on dense NumPy arrays on the CPU (any axis, in place or out of place) and its gradient."""

import numpy as np

from ... import _config, opencl
from ..._cpu import normalize as _kernels
from ..._validation import FLOAT_DTYPES, require_dtype, require_norm_fits
from ._common import _STORAGE, _check_out_dense, _run_dense, canonical_axis
from .dense_opencl import _enqueue_dense

_DENSE = {t: _kernels.normalize_dense.__signatures__[s] for t, s in _STORAGE.items()}
_DENSE_GRAD = {t: _kernels.normalize_gradient_dense.__signatures__[s] for t, s in _STORAGE.items()}


def normalize_dense(op, x, axis, use_max_norm=False, norm=1.0, out=None, backend=None, name="X"):
    """Validate, then normalise the dense array ``x`` along ``axis`` into ``out`` (new if None).

    ``use_max_norm`` and ``norm`` must already be converted.  ``out`` may be
    ``x`` (in place).  With an OpenCL ``backend`` the work is done there (``x``
    copied in, the result copied back into ``out``).  ``name`` is what error
    messages call ``x`` (the operator's ``X``, the functional form's ``W``).
    Returns ``out``.
    """
    require_dtype(op, name, x, FLOAT_DTYPES)
    if backend is not None:
        opencl.dtype_defines(op, x.dtype, backend.info)  # TypeError: float64 without fp64
    axis = canonical_axis(op, axis, x.ndim)
    require_norm_fits(op, name, norm, x.dtype)
    if out is None:
        out = np.empty(x.shape, x.dtype, order="F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C")
    else:
        _check_out_dense(op, x, out)
    if x.size == 0:
        return out
    if backend is not None:
        work = backend.from_host(x.view(np.ndarray))
        _enqueue_dense(op, backend.queue, backend, [work], work, axis, (use_max_norm, norm))
        np.copyto(out.view(np.ndarray), backend.to_host(work))
        return out
    return _run_dense(_DENSE, [x], out, axis, (use_max_norm, norm, _config.get_num_threads()))


def check_gradient_inputs(op, x, dy, axis):
    """Validate NormalizeGradient's inputs; return the axis in ``[0, x.ndim)``."""
    for name, value in (("X", x), ("dY", dy)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
    require_dtype(op, "X", x, FLOAT_DTYPES)
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dY must have the dtype of X ({x.dtype}), got {dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"{op}: dY must have the shape of X {x.shape}, got {dy.shape}")
    return canonical_axis(op, axis, x.ndim)


def normalize_gradient_dense(op, x, dy, axis, out=None):
    """Validate, then compute NormalizeGradient's ``dX`` from ``x`` and ``dy`` into ``out`` (new if None)."""
    axis = check_gradient_inputs(op, x, dy, axis)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:
        _check_out_dense(op, x, out)
    if x.size == 0:
        return out
    return _run_dense(_DENSE_GRAD, [x, dy], out, axis, (_config.get_num_threads(),))
