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
