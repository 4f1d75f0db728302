# SPDX-License-Identifier: BSD-3-Clause
"""The peers and floors caffe2op is measured against, each written plainly.

Optional peers (torch, scikit-learn) raise :class:`~caffe2op.bench.timing.Missing`
when they are not installed: they are reported as missing, never faked.
"""

import numpy as np

from .timing import Missing


def numpy_sparse_normalize(param, indices, use_max_norm=True, norm=1.0):
    """SparseNormalize in vectorised NumPy: unique, gather, norms, mask, scale, scatter."""
    table = param.reshape(len(param), -1)
    rows = np.unique(indices)
    gathered = table[rows]
    norms = np.linalg.norm(gathered, axis=1)
    selected = norms > norm if use_max_norm else np.ones(len(rows), dtype=bool)
    scale = (norm / (norms[selected] + 1e-12)).astype(table.dtype)
    table[rows[selected]] = gathered[selected] * scale[:, None]
    return param


def gather_scatter_floor(param, indices, buffer):
    """The least memory traffic any SparseNormalize needs: gather the rows, scatter them back."""
    table = param.reshape(len(param), -1)
    np.take(table, indices, axis=0, out=buffer)
    table[indices] = buffer
    return param


def _torch():
    try:
        import torch
    except ImportError:
        raise Missing("torch is not installed (pip install 'caffe2op[bench]')") from None
    return torch


def torch_renorm_prepare(param, indices, threads):
    """Tensors for ``torch.embedding_renorm_`` sharing memory with NumPy copies of the inputs."""
    torch = _torch()
    # embedding_renorm_ is a serial loop on the CPU, so one thread costs it nothing; more would leave
    # torch's own OpenMP threads spinning after each call, taking the cores from the next contender.
    torch.set_num_threads(1)
    if param.dtype == np.float16:
        try:
            torch.embedding_renorm_(torch.zeros((2, 2), dtype=torch.float16), torch.tensor([0]), 1.0, 2.0)
        except RuntimeError as err:
            raise Missing(f"torch.embedding_renorm_ has no float16 CPU kernel ({err})") from None
    table = param.reshape(len(param), -1)
    return torch.from_numpy(table), torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))


def torch_renorm(weight, indices, max_norm):
    """``torch.embedding_renorm_`` (what ``nn.Embedding(max_norm=...)`` runs): max-norm, eps 1e-7."""
    return _torch().embedding_renorm_(weight, indices, max_norm, 2.0)


def numpy_normalize(W, axis):
    """Caffe2's Normalize in plain NumPy."""
    return W / np.maximum(np.linalg.norm(W, axis=axis, keepdims=True), 1e-12)


def sklearn_normalize(X, axis):
    """``sklearn.preprocessing.normalize(X, norm="l2", axis=axis)``."""
    try:
        from sklearn.preprocessing import normalize
    except ImportError:
        raise Missing("scikit-learn is not installed (pip install 'caffe2op[bench]')") from None
    return normalize(X, norm="l2", axis=axis)
