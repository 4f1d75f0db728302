# SPDX-License-Identifier: BSD-3-Clause
"""The peers caffe2op is measured against, each written plainly (the limits are in :mod:`.floor`).

Optional peers (numba, torch, scikit-learn) raise :class:`~caffe2op.bench.timing.Missing`
when they are not installed: they are reported as missing, never faked.
"""

import functools

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


# --- numba: the same operations written as a competent numba user would -------------------------------


@functools.cache
def _numba_kernels():
    """Compile the numba peers once (``@njit(parallel=True, fastmath=True)``); Missing without numba."""
    try:
        import numba
    except ImportError:
        raise Missing("numba is not installed (pip install 'caffe2op[bench]')") from None
    njit, prange = numba.njit(parallel=True, fastmath=True, cache=False), numba.prange

    @njit
    def sparse_normalize(table, indices, use_max_norm, norm):
        rows = np.unique(indices)  # a parallel loop needs each row once
        for i in prange(rows.size):
            row = table[rows[i]]
            total = 0.0
            for j in range(row.size):
                total += np.float64(row[j]) * np.float64(row[j])
            n = np.sqrt(total)
            if use_max_norm and n <= norm:
                continue
            scale = norm / (n + 1e-12)
            for j in range(row.size):
                row[j] = row[j] * scale
        return table

    @njit
    def normalize_rows(x):  # axis 1 of a 2-D array: one row per iteration
        out = np.empty_like(x)
        for i in prange(x.shape[0]):
            total = 0.0
            for j in range(x.shape[1]):
                total += np.float64(x[i, j]) * np.float64(x[i, j])
            inverse = 1.0 / max(np.sqrt(total), 1e-12)
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] * inverse
        return out

    @njit
    def normalize_columns(x):  # axis 0: column sums over blocks of columns, then a row-parallel scale
        n, m = x.shape
        block = 64
        sums = np.zeros(m, np.float64)
        for b in prange((m + block - 1) // block):
            start, stop = b * block, min(m, (b + 1) * block)
            for i in range(n):
                for j in range(start, stop):
                    sums[j] += np.float64(x[i, j]) * np.float64(x[i, j])
        inverse = np.empty(m, x.dtype)
        for j in range(m):
            inverse[j] = 1.0 / max(np.sqrt(sums[j]), 1e-12)
        out = np.empty_like(x)
        for i in prange(n):
            for j in range(m):
                out[i, j] = x[i, j] * inverse[j]
        return out

    @njit
    def csr_normalize_rows(data, indptr):
        out = np.empty_like(data)
        for i in prange(indptr.size - 1):
            total = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                total += np.float64(data[k]) * np.float64(data[k])
            inverse = 1.0 / max(np.sqrt(total), 1e-12)
            for k in range(indptr[i], indptr[i + 1]):
                out[k] = data[k] * inverse
        return out

    @njit
    def csr_normalize_columns(data, indices, n_columns):
        sums = np.zeros(n_columns, np.float64)
        for k in range(data.size):  # a scatter-add: serial (racy in a prange)
            sums[indices[k]] += np.float64(data[k]) * np.float64(data[k])
        inverse = np.empty(n_columns, data.dtype)
        for j in range(n_columns):
            inverse[j] = 1.0 / max(np.sqrt(sums[j]), 1e-12)
        out = np.empty_like(data)
        for k in prange(data.size):
            out[k] = data[k] * inverse[indices[k]]
        return out

    @njit
    def copy(dst, src):
        for i in prange(src.size):
            dst[i] = src[i]
        return dst

    return dict(
        numba=numba,
        sparse_normalize=sparse_normalize,
        normalize_rows=normalize_rows,
        normalize_columns=normalize_columns,
        csr_normalize_rows=csr_normalize_rows,
        csr_normalize_columns=csr_normalize_columns,
        copy=copy,
    )


def numba_kernels(threads):
    """The numba peers, with numba's thread count set to ``threads``."""
    kernels = _numba_kernels()
    kernels["numba"].set_num_threads(min(threads, kernels["numba"].config.NUMBA_NUM_THREADS))
    return kernels


def numba_sparse_normalize(param, indices, use_max_norm, norm, threads):
    """SparseNormalize with numba: ``np.unique`` then a ``prange`` over the distinct rows."""
    kernels = numba_kernels(threads)
    if param.dtype == np.float16:
        raise Missing("numba has no float16 arithmetic on the CPU")
    kernels["sparse_normalize"](param.reshape(len(param), -1), indices, use_max_norm, norm)
    return param


def numba_normalize(X, axis, threads):
    """Dense Normalize of a 2-D array with numba (new output)."""
    kernels = numba_kernels(threads)
    return kernels["normalize_rows" if axis in (1, -1) else "normalize_columns"](X)


def numba_csr_normalize(matrix, axis, threads):
    """Normalize of a CSR matrix with numba: a new ``data``, the structure copied as scikit-learn does."""
    import scipy.sparse as sp

    kernels = numba_kernels(threads)
    if axis in (1, -1):
        data = kernels["csr_normalize_rows"](matrix.data, matrix.indptr)
    else:
        data = kernels["csr_normalize_columns"](matrix.data, matrix.indices, matrix.shape[1])
    return sp.csr_matrix((data, matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape)


def numba_copy(dst, src, threads):
    """StopGradient's copy with a numba ``prange`` loop."""
    return numba_kernels(threads)["copy"](dst.reshape(-1), src.reshape(-1))


def torch_copy(dst, src, threads):
    """``torch.Tensor.copy_`` between tensors sharing memory with ``dst`` and ``src``."""
    torch = _torch()
    torch.set_num_threads(threads)
    torch.from_numpy(dst).copy_(torch.from_numpy(src))
    return dst
