# SPDX-License-Identifier: BSD-3-Clause
"""The functional form :func:`caffe2op.normalize`: dense, sparse, host or device, dispatched once."""

import numpy as np

from ... import _interop, opencl
from ..._validation import require_norm_fits
from ...core import DeviceType
from ...errors import SchemaTypeError
from ...opencl import fork_proxy
from ._common import scipy_sparse_of
from .dense import normalize_dense
from .dense_opencl import normalize_opencl
from .schema import _NORM, _USE_MAX_NORM
from .sparse import normalize_sparse
from .sparse_opencl import normalize_sparse_opencl

__all__ = ["normalize"]


def normalize(W, *, axis=-1, norm=1.0, use_max_norm=False, out=None, device=None):
    """Scale every vector of ``W`` along ``axis`` to L2 norm ``norm`` (Caffe2's Normalize by default).

    With the defaults every vector ``v`` becomes ``v / max(||v||_2, 1e-12)``:
    exactly the Normalize operator, for dense arrays of any rank and for
    ``scipy.sparse`` matrices and arrays, whose sparsity is kept.

    Parameters
    ----------
    W : array_like, scipy.sparse matrix/array, pyopencl.array.Array or DeviceSparseMatrix
        float16, float32 or float64 data.  Integer or bool host data (NumPy
        or scipy.sparse) are normalised out of place into a new float64
        result, as scikit-learn's ``normalize`` does (or into a float64
        ``out``); they cannot be normalised in place.  Dense: any rank >= 1.  Sparse:
        2-D CSR or CSC (the result has the same format and structure: equal
        ``indptr`` and ``indices``, explicit zeros kept, only ``data``
        changes), or COO (converted to CSR for ``axis=1`` / CSC for
        ``axis=0`` with **duplicate entries summed**, normalised, and returned
        as a new COO matrix in canonical order).  Other sparse formats (DIA,
        LIL, DOK, BSR) are rejected.  CSR/CSC with duplicate entries are
        handled: a vector's norm is that of its summed entries, and every
        stored part is scaled, so the structure is still unchanged.  On a
        device: a C-contiguous ``pyopencl.array.Array`` (the kernels run on
        its queue, the result stays on its device) or a
        :class:`~caffe2op.DeviceSparseMatrix` (CSR/CSC on a device, same
        rules as scipy's; float64 needs a device with ``cl_khr_fp64``).
    axis : int, default -1
        Axis along which the vectors lie; negative values count from the end.
        For a 2-D matrix ``axis=0`` normalises columns and ``axis=1`` rows.
    norm : float, default 1.0
        Target L2 norm of the vectors, finite and >= 0.  Not scikit-learn's
        ``norm=`` (``"l1"``, ``"l2"`` or ``"max"``, the kind of norm): this
        function always measures L2 norms, and those strings raise a
        TypeError that says so (scikit-learn's default ``norm="l2"`` is this
        function's default ``norm=1.0``).
    use_max_norm : bool, default False
        True: only vectors whose norm exceeds ``norm`` are scaled (down) to
        ``norm``; the others are untouched (SparseNormalize's max-norm mode).
    out : numpy.ndarray or scipy.sparse matrix, optional
        Where to write the result.  Dense: an array of ``W``'s shape and
        dtype; ``out=W`` normalises in place.  Sparse (CSR/CSC): ``W`` itself
        (in place: only ``W.data`` is rewritten), or a matrix of the same
        format, dtype, shape and structure (equal ``indptr`` and ``indices``,
        e.g. ``W.copy()``) whose ``data`` is overwritten.  Not allowed for
        COO input.  On a device: a C-contiguous ``pyopencl.array.Array`` of
        ``W``'s context for a device array (``out=W`` in place; an ``out``
        overlapping ``W`` otherwise is written through a temporary), a
        DeviceSparseMatrix with ``W``'s structure (e.g. ``W.copy()``, or ``W``
        itself) for a device sparse matrix.  Default: a new array / matrix.
    device : str or DeviceOption, optional
        Where to compute for host data (NumPy or scipy): ``"cpu"`` or None
        (the CPU kernels), or ``"opencl"``, ``"opencl:N"``, ``"cuda"``,
        ``"cuda:N"`` or a DeviceOption to run the OpenCL kernels there: the
        data are copied in and the result copied back into a new host object
        or into ``out`` (``out=W`` updates ``W`` in place), exactly as on the
        CPU.  For device input it may only name that input's device.

    Returns
    -------
    numpy.ndarray, scipy.sparse matrix/array, pyopencl.array.Array or DeviceSparseMatrix
        ``out`` when given, else a new array (dense) or a new sparse object
        of ``W``'s class with copies of ``W``'s index arrays (their dtypes
        kept), on ``W``'s device for device input.

    Raises
    ------
    TypeError
        If the data are not float16/32/64, integer or bool (device data: not
        float16/32/64, or float64 on a device without fp64), integer or bool
        data are to be normalised in place, the sparse format is not CSR, CSC
        or COO, its index arrays are not int32 or int64, ``out`` has the
        wrong kind, format or dtype, or ``norm`` is not a number
        (scikit-learn's ``"l1"``, ``"l2"`` and ``"max"`` get an explanation).
    ValueError
        If ``axis`` is out of range (a :class:`~caffe2op.SchemaError`),
        ``norm`` is negative, not finite or beyond the largest value of
        ``W``'s dtype, a sparse input is not 2-D or has
        an invalid structure (or another thread rewrote its index arrays
        while the call ran), ``out`` has the wrong shape or structure, is
        read-only or lives on another device, a device array is not
        C-contiguous, or ``device`` contradicts where ``W`` lives.  Nothing is
        modified when an error is raised.
    RuntimeError
        If ``device`` names an OpenCL or CUDA device that does not exist.

    See Also
    --------
    sparse_normalize : SparseNormalize on selected rows of an embedding table.

    Notes
    -----
    For a vector ``v`` with ``n = ||v||_2`` the result is:

    * ``use_max_norm=True`` and ``n <= norm``: ``v`` unchanged (the rule of
      SparseNormalize);
    * otherwise ``v * norm / max(n, 1e-12)`` (the eps rule of Normalize).

    So an all-zero vector stays zero in every mode, a vector with a NaN
    propagates NaN, and in max-norm mode a scaled vector ends with norm
    ``norm`` up to rounding.  SparseNormalize itself scales by
    ``norm / (n + 1e-12)``: the two agree to a relative ``1e-12 / n``, below
    float32 resolution (and equal exactly for ``n == 0``); they differ only
    for ``0 < n < 1e-12`` in constant-norm mode, where this function
    amplifies by ``norm / 1e-12`` instead of ``norm / (n + 1e-12)``.

    Norms are accumulated in float64 for every dtype, so they stay accurate
    at any length; a float64 vector whose sum of squares would overflow or
    underflow (values near 1e200 or 1e-200) has its norm recomputed from
    values scaled by a power of two, so it is normalised correctly.  float64
    data are scaled in float64; float32 and float16 data are multiplied in
    float32 by the scale rounded to float32, as Caffe2 did (within one ulp of
    the exact quotient; float16 results rounded to nearest even).  Any axis of a C- or F-contiguous array is
    processed in place in memory (other layouts through one contiguous
    copy); sparse input is never densified.  Results are bit-identical for
    any number of threads.  ``sklearn.preprocessing.normalize(X, norm="l2",
    axis=a)`` gives the same values except that it takes ``axis=1`` as
    default and returns a CSC result for CSR input along ``axis=0``.

    The OpenCL kernels (``opencl_kernels/normalize.cl``) compute the same
    formulas with the same precision (float32 data accumulate in float64 on
    devices with fp64, in float32 on others); they sum in another order than
    the CPU kernels, so the two agree to rounding, and each device repeats
    its own results bit for bit.  One kernel launch per call; a device
    sparse matrix's structure is analysed on the host once (it is kept with
    the matrix) and nothing but the values moves afterwards.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> w = np.array([[3.0, 0.0], [4.0, 0.0]])
    >>> caffe2op.normalize(w, axis=0)
    array([[0.6, 0. ],
           [0.8, 0. ]])
    >>> caffe2op.normalize(np.array([[6.0, 8.0], [0.3, 0.4]]), use_max_norm=True, norm=5.0)
    array([[3. , 4. ],
           [0.3, 0.4]])

    Integer data give a float64 result, as in scikit-learn:

    >>> caffe2op.normalize(np.array([[3, 4]]))
    array([[0.6, 0.8]])

    Sparse input keeps its structure:

    >>> import scipy.sparse as sp
    >>> s = sp.csr_array(np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]]))
    >>> r = caffe2op.normalize(s, axis=0)
    >>> r.format, r.nnz, r.toarray()
    ('csr', 3, array([[0.6, 0. , 1. ],
           [0.8, 0. , 0. ]]))

    On an OpenCL device (host data copied in and out, or device data in place):

    >>> caffe2op.normalize(w, axis=0, device="opencl")  # doctest: +SKIP
    array([[0.6, 0. ],
           [0.8, 0. ]])
    >>> from caffe2op.opencl import backend_for
    >>> d = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL)).from_host(w)  # doctest: +SKIP
    >>> caffe2op.normalize(d, axis=0, out=d).get()  # doctest: +SKIP
    array([[0.6, 0. ],
           [0.8, 0. ]])
    """
    op = "Normalize"
    if _interop.is_foreign(W) or _interop.is_foreign(out):  # torch/DLPack: views of the same memory
        x, target = _interop.host_view(op, "W", W), _interop.host_view(op, "out", out, writes=True)
        result = normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm, out=target, device=device)
        return _interop.like_input(result, W, out)
    _reject_norm_kind(op, norm)
    norm = _NORM.convert(op, norm)
    use_max_norm = _USE_MAX_NORM.convert(op, use_max_norm)
    backend = None
    if device is not None or isinstance(W, opencl.DeviceSparseMatrix) or type(W).__module__.startswith("pyopencl"):
        target = opencl.resolve_device(device)
        on_cpu = target is None or target.device_type == DeviceType.CPU
        home = W.backend if isinstance(W, opencl.DeviceSparseMatrix) else opencl.backend_of_array(W)
        if home is not None:
            if target is not None and (on_cpu or opencl.backend_for(target).info.index != home.info.index):
                raise ValueError(f"{op}: W lives on {home.name} but device={device!r} was asked for")
            if getattr(W, "dtype", None) is not None and np.dtype(W.dtype).kind == "f":
                require_norm_fits(op, "W", norm, W.dtype)
            if isinstance(W, opencl.DeviceSparseMatrix):
                return normalize_sparse_opencl(op, W, axis, use_max_norm, norm, out)
            return normalize_opencl(op, W, axis, use_max_norm, norm, out, backend=home, name="W")
        if not on_cpu and fork_proxy.needed(target):  # a fork child of an OpenCL parent: run in a helper process
            result = fork_proxy.call(
                "normalize", W, axis=axis, norm=norm, use_max_norm=use_max_norm, out=out, device=device
            )
            return fork_proxy.copy_back(result, out)
        if not on_cpu:
            backend = opencl.backend_for(target)  # RuntimeError if there is no such device
    if scipy_sparse_of(W) is not None:
        if W.dtype.kind in _EXACT_KINDS:
            W = _as_float64(op, W, out, sparse=True)
            if out is None and W.format in ("csr", "csc"):
                out = W  # the float64 copy is ours: normalise it in place
        return normalize_sparse(op, W, axis, use_max_norm, norm, out, backend)
    if scipy_sparse_of(out) is not None:
        raise TypeError(f"{op}: out must be a numpy.ndarray for dense input, got {type(out).__name__}")
    x = W if isinstance(W, np.ndarray) else np.asarray(W)
    if x.dtype.kind in _EXACT_KINDS:
        x = _as_float64(op, x, out, sparse=False)
        if out is None:
            out = x  # the float64 copy is ours: normalise it in place
    return normalize_dense(op, x, axis, use_max_norm, norm, out, backend, name="W")


# Integer and bool data: normalised out of place into float64, as scikit-learn does.
_EXACT_KINDS = "biu"


def _as_float64(op, W, out, sparse):
    """A float64 copy of integer or bool host data, after checking that the call is out of place."""
    if out is not None:
        out_dtype = getattr(out, "dtype", None)
        if out is W or out_dtype != np.float64:
            raise TypeError(
                f"{op}: W holds {W.dtype} data, which is normalised out of place into float64 (as scikit-learn "
                f"does): omit out for a new float64 result, or give a float64 out, got "
                f"{'out=W' if out is W else f'out of dtype {out_dtype}'}"
            )
    return W.astype(np.float64) if sparse else np.array(W, dtype=np.float64, order="K")


def _reject_norm_kind(op, norm):
    """scikit-learn's kinds of norm (``"l1"``, ``"l2"``, ``"max"``) are not this function's target length: say so."""
    if isinstance(norm, str) and norm.strip().lower() in ("l1", "l2", "max"):
        if norm.strip().lower() == "l2":
            advice = "omit norm: the default 1.0 scales every vector to unit L2 norm, as norm='l2' does there"
        else:
            advice = "caffe2op.normalize measures L2 norms only"
        raise SchemaTypeError(
            f"{op}: norm is the target L2 length of every vector (a float such as 1.0), not scikit-learn's "
            f"kind of norm ('l1', 'l2' or 'max'); got {norm!r}: {advice}"
        )
