# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and NormalizeGradient: L2-normalise every vector along an axis, dense or sparse.

Caffe2's ``Normalize`` (``caffe2/operators/normalize_op.h``) divides every
vector ``v`` along ``axis`` by ``max(||v||_2, 1e-12)``, so an all-zero vector
stays zero.  For a 2-D weight matrix and ``axis=0`` this is the column
normalisation ``W[i, j] / sqrt(sum_i W[i, j]**2)``.  ``NormalizeGradient(X,
dY) -> dX`` is its backward pass, ``dX = dY / n - X * <X, dY> / n**3`` per
vector with the same ``n``.

The functional form :func:`normalize` also takes ``scipy.sparse`` matrices
and arrays (the result keeps the sparsity structure: only the stored values
change) and SparseNormalize's ``norm`` / ``use_max_norm`` modes along an
axis.  :func:`sparse_normalize_csr` is SparseNormalize on the stored values of
a CSR matrix; :func:`caffe2op.sparse_normalize` dispatches to it.

On OpenCL devices (``opencl_kernels/normalize.cl``) the same operators run
on device blobs, and :func:`normalize` takes device arrays,
:class:`~caffe2op.DeviceSparseMatrix` objects and host data with
``device=``; the header comment of the kernel file describes the launch
shapes and why the results are deterministic.  Normalize's gradient maker
emits ``NormalizeGradient([X, dY]) -> dX``; NormalizeGradient itself has no
gradient (``gradient_not_implemented_yet``).

Differences from Caffe2: float16 and float64 arrays are accepted (Caffe2
registered float only); norms of float32 data are accumulated in float64
(Caffe2 summed in float), float16 norms too; float32 data are
multiplied by the float32 reciprocal of the norm (Caffe2 divided by it),
which can differ from the quotient by one ulp.  scipy is never imported
here: a sparse input is recognised through ``sys.modules``, so
``import caffe2op`` does not need scipy.
"""

from . import operators  # noqa: F401  (registers the operators)
from .functional import normalize

__all__ = ["normalize"]
