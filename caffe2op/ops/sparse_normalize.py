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
``norm / (norm + 1e-12)``); an all-zero row stays zero.
"""

import math

import numpy as np

from .. import _config
from .._cpu import sparse_normalize as _kernels
from .._validation import (
    FLOAT_DTYPES,
    index_vector,
    raise_first_bad_index,
    require_dtype,
    require_ndarray,
    require_writeable,
)
from ..registry import Operator, register_cpu_operator
from ..schema import Argument, OpSchema, non_negative_finite, register_schema

__all__ = ["sparse_normalize"]

_INPUTS = [
    ("param", "Embedding table, updated in place; rows are ``param.reshape(len(param), -1)``."),
    ("indices", "Rows to normalise (int32 or int64, any shape, flattened; repeats allowed)."),
    ("grad", "Optional, ignored: kept for compatibility with Caffe2 nets that pass the sparse gradient."),
]
_OUTPUTS = [("param", "The same blob as input 0 (enforced).")]
_ARGS = [
    Argument(
        "use_max_norm",
        bool,
        default=True,
        doc="True: only rows with norm above ``norm`` are scaled down (max-norm). "
        "False: every selected row is scaled to norm ``norm`` (constant-norm).",
    ),
    Argument(
        "norm",
        float,
        default=1.0,
        validator=non_negative_finite,
        doc="Target L2 norm of the rows (finite, >= 0).",
    ),
]
_FORMULA = (
    r"n_i = \lVert W_i \rVert_2,\qquad "
    r"W_i \leftarrow \begin{cases} W_i & \text{if } \mathtt{use\_max\_norm} \text{ and } n_i \le \mathrm{norm}\\"
    r" W_i \cdot \dfrac{\mathrm{norm}}{n_i + 10^{-12}} & \text{otherwise}\end{cases}"
)
_EXAMPLE = """\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], dtype=np.float32)
>>> caffe2op.sparse_normalize(w, np.array([0, 1]), norm=1.0)
array([[0.6, 0.8],
       [0.3, 0.4],
       [6. , 8. ]], dtype=float32)
"""

SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=_INPUTS,
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="Scale the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place "
        "(max-norm mode: only the rows above it).  Each distinct row is normalised once, "
        "whatever the number of threads; indices are checked before any row is written.  "
        "float32 and float64 tables (float16 ones run the Float16SparseNormalize kernel).  "
        "No gradient: asking for one raises.",
        formula=_FORMULA,
        example=_EXAMPLE,
    )
)

FLOAT16_SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "Float16SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=[("param", "float16 embedding table, updated in place.")] + _INPUTS[1:],
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="SparseNormalize for float16 tables: norms and scaling are computed in float32 and "
        "each element is rounded back to float16 (round to nearest even).  No gradient: asking "
        "for one raises.",
        formula=_FORMULA,
        example="""\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float16)
>>> caffe2op.sparse_normalize(w, [0]).dtype
dtype('float16')
>>> w[0].tolist()  # 0.6 and 0.8, rounded to float16
[0.60009765625, 0.7998046875]
""",
    )
)

# Storage type of each table dtype in the kernels (float16 travels as its bits).
_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "uint16_t"}
_INDEX = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_HALF = (np.dtype(np.float16),)


def _specialised(table_dtype, index_dtype):
    """The fused kernel specialised for one (table, index) dtype pair, without per-call dispatch."""
    return _kernels.sparse_normalize_rows.__signatures__[f"{_STORAGE[table_dtype]}|{_INDEX[index_dtype]}"]


_KERNELS = {(t, i): _specialised(t, i) for t in _STORAGE for i in _INDEX}
_RANGE_CHECKS = {i: _kernels.count_out_of_range.__signatures__[_INDEX[i]] for i in _INDEX}


def check_sparse_normalize_args(op, param, indices, use_max_norm, norm, *, float16_only=False, n_threads=1):
    """Validate SparseNormalize's inputs on the host; return ``(indices, use_max_norm, norm)``.

    ``param`` is checked for kind, dtype, rank and writeability; ``indices``
    are flattened to int32/int64 and bounds-checked against ``len(param)``.
    Nothing is modified.
    """
    require_ndarray(op, "param", param, " (it is updated in place)")
    require_dtype(op, "param", param, _HALF if float16_only else FLOAT_DTYPES)
    if param.ndim == 0:
        raise ValueError(f"{op}: param must have at least 1 dimension (rows), got a 0-d array")
    require_writeable(op, "param", param)
    schema = FLOAT16_SPARSE_NORMALIZE_SCHEMA if float16_only else SPARSE_NORMALIZE_SCHEMA
    use_max_norm = schema.arg("use_max_norm").convert(op, use_max_norm)
    norm = schema.arg("norm").convert(op, norm)
    indices = index_vector(op, "indices", indices)
    n_rows = param.shape[0]
    if indices.size and _RANGE_CHECKS[indices.dtype](indices, n_rows, n_threads):
        raise_first_bad_index(op, "indices", indices, n_rows)
    return indices, use_max_norm, norm


def sparse_normalize_cpu(op, param, indices, use_max_norm, norm, *, float16_only=False):
    """Validate, then normalise ``param[indices]`` in place on the CPU."""
    n_threads = _config.get_num_threads()
    indices, use_max_norm, norm = check_sparse_normalize_args(
        op, param, indices, use_max_norm, norm, float16_only=float16_only, n_threads=n_threads
    )
    block = math.prod(param.shape[1:])
    if indices.size == 0 or block == 0:
        return param
    contiguous = param.flags.c_contiguous
    table = param if contiguous else np.ascontiguousarray(param)
    rows = table.reshape(table.shape[0], block)
    if table.dtype == np.float16:
        rows = rows.view(np.uint16)
    _KERNELS[param.dtype, indices.dtype](rows, indices, use_max_norm, norm, n_threads)
    if not contiguous:
        np.copyto(param, table)
    return param


def sparse_normalize(param, indices, grad=None, *, use_max_norm=True, norm=1.0):
    """Normalise the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place.

    The functional form of the SparseNormalize operator (and of
    Float16SparseNormalize for float16 tables), running the same kernels
    without a workspace.

    Parameters
    ----------
    param : numpy.ndarray
        Embedding table (float16, float32 or float64, at least 1-D, writable);
        row ``i`` is ``param.reshape(len(param), -1)[i]``.  Updated in place.
        Non-contiguous arrays are handled (through a temporary copy).
    indices : array_like of int
        Rows to normalise: any shape (flattened), int32 or int64 (other
        integer dtypes are converted).  Repeated indices normalise their row
        once; an empty array does nothing.
    grad : object, optional
        Ignored; accepted because Caffe2 nets passed the sparse gradient values.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down.  False:
        every selected row is scaled to norm ``norm``.
    norm : float, default 1.0
        Target norm, finite and >= 0.

    Returns
    -------
    numpy.ndarray
        ``param`` itself.

    Raises
    ------
    TypeError
        If ``param`` is not a NumPy array or not float16/32/64, if
        ``indices`` are not integers, or if ``norm``/``use_max_norm`` have the
        wrong type.
    ValueError
        If ``param`` is 0-d or read-only, or ``norm`` is negative, NaN or infinite.
    IndexError
        If an index is negative or ``>= len(param)`` (the message names the
        first one).  ``param`` is left bit-identical.

    See Also
    --------
    normalize : normalise every vector along an axis (Caffe2's Normalize).

    Notes
    -----
    Rows are scaled by ``norm / (n + 1e-12)`` where ``n`` is the row's L2
    norm (accumulated in float64 for float32/float64 tables, in float32 for
    float16 ones, as Caffe2 did); with ``use_max_norm`` a row with
    ``n <= norm`` is untouched.  All-zero rows stay zero.  Results are
    identical for any number of threads.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    >>> caffe2op.sparse_normalize(w, [0, 1, 0], norm=1.0)
    array([[0.6, 0.8],
           [0.3, 0.4],
           [6. , 8. ]])
    >>> caffe2op.sparse_normalize(w, [1], use_max_norm=False, norm=2.0)[1]
    array([1.2, 1.6])
    """
    return sparse_normalize_cpu("SparseNormalize", param, indices, use_max_norm, norm)


@register_cpu_operator("SparseNormalize")
class SparseNormalizeCPU(Operator):
    """SparseNormalize on the CPU (float16 tables use the Float16 kernel)."""

    float16_only = False

    def run_on_device(self):
        sparse_normalize_cpu(
            self.type,
            self.input(0),
            self.input(1),
            self.arg("use_max_norm"),
            self.arg("norm"),
            float16_only=self.float16_only,
        )


@register_cpu_operator("Float16SparseNormalize")
class Float16SparseNormalizeCPU(SparseNormalizeCPU):
    """Float16SparseNormalize on the CPU (float16 tables only)."""

    float16_only = True
