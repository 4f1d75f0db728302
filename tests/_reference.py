# SPDX-License-Identifier: BSD-3-Clause
"""Independent NumPy references of the operators' formulas, computed in float64."""

import numpy as np

EPS = 1e-12


def sparse_normalize_ref(param, indices, use_max_norm=True, norm=1.0):
    """SparseNormalize on a copy of ``param``: each distinct selected row once, in float64.

    Returns the result in ``param``'s dtype.
    """
    out = np.array(param, dtype=np.float64, copy=True)
    rows = out.reshape(out.shape[0], -1) if out.shape[0] else out.reshape(0, max(1, out[0:0].size))
    for i in dict.fromkeys(np.asarray(indices).reshape(-1).tolist()):
        n = np.sqrt(np.sum(rows[i] ** 2))
        if use_max_norm and n <= norm:
            continue
        if n == 0:
            continue
        rows[i] *= norm / (n + EPS)
    return out.astype(param.dtype)


def normalize_ref(x, axis=-1, norm=1.0, use_max_norm=False):
    """Normalize along ``axis`` in float64: ``v * norm / max(||v||, 1e-12)``.

    With ``use_max_norm`` a vector whose norm is ``<= norm`` is returned
    unchanged.  Returns float64 (compare with the input dtype's tolerance).
    """
    v = np.asarray(x, dtype=np.float64)
    n = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
    scale = norm / np.maximum(n, EPS)
    if use_max_norm:
        scale = np.where(n <= norm, 1.0, scale)
    return v * scale


def normalize_gradient_ref(x, dy, axis=-1):
    """NormalizeGradient in float64: ``dy / n - x * <x, dy> / n**3`` with ``n = max(||x||, 1e-12)``."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    n = np.maximum(np.sqrt(np.sum(x * x, axis=axis, keepdims=True)), EPS)
    return dy / n - x * np.sum(x * dy, axis=axis, keepdims=True) / n**3
