# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize and Float16SparseNormalize: max-norm / constant-norm of selected embedding rows.

Caffe2's regularizers (``MaxNorm``, ``ConstantNorm``) ran these after each
sparse update, on the rows the update touched.  For every selected row
``r = param.reshape(len(param), -1)[i]``::

    n = ||r||_2
    if use_max_norm and n <= norm:  leave r alone
    else:                           r *= norm / (n + 1e-12)

Differences from Caffe2, all on inputs Caffe2 did not handle: float64 tables
are accepted; out-of-range and negative indices raise ``IndexError`` before
anything is written (Caffe2 had no check); a repeated index normalises its
row once (Caffe2's serial loop rescaled it a second time by about
``norm / (norm + 1e-12)``).  An all-zero row stays zero, as in Caffe2
(which multiplied it by ``norm / 1e-12``), but without ever forming that
factor, so a huge ``norm`` cannot turn it into NaN.
"""

from . import cpu, opencl_impl  # noqa: F401  (registers the operators)
from .functional import sparse_normalize

__all__ = ["sparse_normalize"]
