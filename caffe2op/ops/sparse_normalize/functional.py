# SPDX-License-Identifier: BSD-3-Clause
"""The functional form :func:`caffe2op.sparse_normalize`: NumPy, CSR, device arrays and ``device=``."""

import numpy as np

from ... import _interop, opencl
from ...opencl import fork_proxy
from ..normalize.sparse import sparse_normalize_csr
from .cpu import sparse_normalize_cpu
from .opencl_impl import _sparse_normalize_elsewhere, selected_rows

__all__ = ["sparse_normalize"]


def sparse_normalize(param, indices, grad=None, *, use_max_norm=True, norm=1.0, device=None):
    """Normalise the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place.

    The functional form of the SparseNormalize operator (and of
    Float16SparseNormalize for float16 tables), running the same kernels
    without a workspace.

    Parameters
    ----------
    param : numpy.ndarray, pyopencl.array.Array or scipy.sparse CSR matrix/array
        Embedding table (float16, float32 or float64, at least 1-D, writable);
        row ``i`` is ``param.reshape(len(param), -1)[i]``.  Updated in place.
        Non-contiguous NumPy arrays are handled (through a temporary copy);
        device arrays must be C-contiguous, and the kernels run on their queue.
        A CSR matrix/array (CPU only): the stored values of the selected rows
        are normalised, the structure is left untouched.
    indices : array_like of int or pyopencl.array.Array
        Rows to normalise: any shape (flattened), int32 or int64 (other
        integer dtypes are converted).  Repeated indices normalise their row
        once; an empty array does nothing.  With a device ``param`` they may
        be a device array of the same context (bounds-checked on the device)
        or host data (checked on the host, then copied).
    grad : object, optional
        Ignored; accepted because Caffe2 nets passed the sparse gradient values.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down.  False:
        every selected row is scaled to norm ``norm``.
    norm : float, default 1.0
        Target norm, finite and >= 0.
    device : str or DeviceOption, optional
        For a NumPy ``param``: ``"cpu"`` (the default), or ``"opencl"``,
        ``"opencl:N"``, ``"cuda"``, ``"cuda:N"`` or a DeviceOption to run the
        OpenCL kernel there (``param`` and ``indices`` are copied in, and the
        result is copied back into ``param``).  For a device ``param`` it may
        only name that array's device.

    Returns
    -------
    numpy.ndarray or pyopencl.array.Array
        ``param`` itself.

    Raises
    ------
    TypeError
        If ``param`` is not a NumPy or pyopencl array or not float16/32/64,
        if ``indices`` are not integers, if ``norm``/``use_max_norm`` have the
        wrong type, or if ``param`` is float64 and the device has no fp64.
    ValueError
        If ``param`` is 0-d or read-only, a device ``param`` is not
        C-contiguous, ``norm`` is negative, NaN or infinite, or ``device``
        contradicts where ``param`` lives.
    IndexError
        If an index is negative or ``>= len(param)`` (the message names the
        first one).  ``param`` is left bit-identical.
    RuntimeError
        If ``device`` names an OpenCL or CUDA device that does not exist.

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
    >>> caffe2op.sparse_normalize(w, [2], device="opencl")[2]  # doctest: +SKIP
    array([0.6, 0.8])
    """
    if device is None and isinstance(param, np.ndarray):
        return sparse_normalize_cpu("SparseNormalize", param, indices, use_max_norm, norm)
    if _interop.is_foreign(param) or _interop.is_foreign(indices):  # torch/DLPack: a view of the same memory
        view = _interop.host_view("SparseNormalize", "param", param, writes=True)
        rows = _interop.host_view("SparseNormalize", "indices", indices)
        sparse_normalize(view, rows, use_max_norm=use_max_norm, norm=norm, device=device)
        _interop.mark_written(param)
        return param
    if isinstance(param, np.ndarray) and device is not None and fork_proxy.needed(opencl.resolve_device(device)):
        return _sparse_normalize_in_helper_process(param, indices, use_max_norm, norm, device)
    if type(param).__module__.startswith("scipy.sparse"):  # CSR storage
        return sparse_normalize_csr(param, indices, use_max_norm=use_max_norm, norm=norm, device=device)
    return _sparse_normalize_elsewhere("SparseNormalize", param, indices, use_max_norm, norm, device)


def _sparse_normalize_in_helper_process(param, indices, use_max_norm, norm, device):
    """A NumPy table on a device, in a fork child of an OpenCL parent (see :mod:`caffe2op.opencl.fork_proxy`).

    Only the distinct selected rows travel to the helper process and back,
    and only they are written, as on the direct path.
    """
    op = "SparseNormalize"
    rows, use_max_norm, norm = selected_rows(op, param, indices, use_max_norm, norm)
    if rows.size == 0:
        fork_proxy.call("sparse_normalize", param[:0], rows, norm=norm, device=device)  # dtype/device checks
        return param
    compact = fork_proxy.call(
        "sparse_normalize",
        np.ascontiguousarray(param[rows]),
        np.arange(rows.shape[0], dtype=np.int64),
        use_max_norm=use_max_norm,
        norm=norm,
        device=device,
    )
    param[rows] = compact
    return param
