# SPDX-License-Identifier: BSD-3-Clause
"""Sparse matrices on a device: :class:`DeviceSparseMatrix`."""

from operator import index as operator_index

import numpy as np

from ..core import DeviceType
from .backend import OpenCLBackend, backend_for, backend_of_array
from .devices import _import_pyopencl, require_pyopencl, resolve_device

_SPARSE_FORMATS = ("csr", "csc")
_SPARSE_DATA_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_SPARSE_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _check_sparse_structure(where, fmt, shape, indptr, indices, data_length):
    """Check host copies of a CSR/CSC structure; return ``nnz``.

    Raises ValueError for a wrong ``indptr`` length, an ``indptr`` that does
    not start at 0, decreases or runs past ``indices``/``data``, or a stored
    index out of range.
    """
    major, minor = (0, 1) if fmt == "csr" else (1, 0)
    n_major, n_minor = shape[major], shape[minor]
    if indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"{where}: indptr must have {n_major + 1} entries for a {fmt.upper()} matrix of shape {shape}, "
            f"got {indptr.shape[0]}"
        )
    steps = np.diff(indptr)
    if indptr[0] != 0 or (steps.size and steps.min() < 0):
        position = 0 if indptr[0] != 0 else int(np.argmax(steps < 0)) + 1
        raise ValueError(
            f"{where}: indptr is not a valid index pointer (it must start at 0 and never decrease; first bad "
            f"entry at position {position})"
        )
    nnz = int(indptr[-1])
    if nnz > indices.shape[0] or nnz > data_length:
        raise ValueError(
            f"{where}: indptr ends at {nnz} but indices has {indices.shape[0]} and data {data_length} entries"
        )
    stored = indices[:nnz]
    if nnz and (stored.min() < 0 or stored.max() >= n_minor):
        position = int(np.argmax((stored < 0) | (stored >= n_minor)))
        raise ValueError(
            f"{where}: indices[{position}] = {int(stored[position])} is out of range for {n_minor} "
            f"{'columns' if fmt == 'csr' else 'rows'}"
        )
    return nnz


class DeviceSparseMatrix:
    """A CSR or CSC matrix whose three arrays live on an OpenCL device.

    The device counterpart of ``scipy.sparse.csr_array``/``csc_array``:
    :func:`caffe2op.normalize` normalises it along either axis on the device,
    rewriting ``data`` only.  The structure (``indptr``, ``indices``) is
    checked on the host once, when the matrix is made, and kept there as a
    copy; it must not be changed afterwards (``data`` may be).

    Parameters
    ----------
    arrays : tuple of pyopencl.array.Array
        ``(data, indices, indptr)``: 1-D C-contiguous arrays of one context.
        ``data`` is float16, float32 or float64; ``indices`` and ``indptr``
        int32 or int64 (they may differ).  As in scipy, row ``i`` of a CSR
        matrix stores ``data[indptr[i]:indptr[i + 1]]`` in the columns
        ``indices[indptr[i]:indptr[i + 1]]`` (CSC: columns and rows swapped);
        duplicate entries and unsorted indices are allowed, and ``data`` and
        ``indices`` may be longer than ``nnz = indptr[-1]``.  ``data`` is
        used as it is, not copied; the structure (``indices``, ``indptr``)
        is copied once it is checked, so later changes to the caller's
        arrays cannot reach the kernels.
    shape : tuple of int
        ``(rows, columns)``.
    format : {"csr", "csc"}, default "csr"
        The storage format.

    Attributes
    ----------
    data : pyopencl.array.Array
        The values (shared with the caller; they may change).
    indices, indptr : pyopencl.array.Array
        Device copies of the checked structure, new on every access (writing
        them changes nothing).
    shape : tuple of int
        ``(rows, columns)``.
    format : str
        ``"csr"`` or ``"csc"``.
    backend : OpenCLBackend
        The device (context and queue) the arrays belong to.

    Every attribute is read-only: no change a caller makes can let a kernel
    read or write outside the arrays the structure was checked against.

    Raises
    ------
    TypeError
        If the arrays are not three pyopencl arrays, ``data`` is not
        float16/32/64 or an index array is not int32/int64.
    ValueError
        If the format is not CSR or CSC, the shape is not two non-negative
        ints, an array is not 1-D and C-contiguous, the arrays belong to
        different contexts, or the structure is invalid (``indptr`` of the
        wrong length, not starting at 0, decreasing or running past
        ``indices``/``data``; a stored index out of range).

    See Also
    --------
    caffe2op.normalize : normalises it on its device.

    Notes
    -----
    The host copy of the structure costs ``8 * (nnz + rows + 1)`` bytes at
    most.  Normalising across the compressed direction (CSR columns, CSC
    rows), or a matrix with duplicate entries, first computes a stable order
    of the entries per vector on the host and keeps it on the device with the
    matrix (int64 arrays of ``nnz``, and of the vector count, and with
    duplicates one more of ``nnz``): the first such call pays for a sort,
    later ones only launch the kernel.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, caffe2op
    >>> w = sp.csr_array(np.array([[3.0, 0.0], [4.0, 1.0]], dtype=np.float32))
    >>> d = caffe2op.DeviceSparseMatrix.from_scipy(w, "opencl")  # doctest: +SKIP
    >>> caffe2op.normalize(d, axis=0, out=d) is d  # doctest: +SKIP
    True
    >>> d.to_scipy().toarray()  # doctest: +SKIP
    array([[0.6, 0. ],
           [0.8, 1. ]], dtype=float32)
    >>> caffe2op.DeviceSparseMatrix(("data", "indices", "indptr"), (2, 2))
    Traceback (most recent call last):
    ...
    TypeError: DeviceSparseMatrix: data must be a pyopencl.array.Array, got str
    """

    def __init__(self, arrays, shape, format="csr"):
        where = "DeviceSparseMatrix"
        if not isinstance(arrays, (tuple, list)) or len(arrays) != 3:
            raise TypeError(f"{where}: arrays must be a tuple (data, indices, indptr), got {type(arrays).__name__}")
        data, indices, indptr = arrays
        fmt, shape = self._check_layout(where, shape, format)
        cl = _import_pyopencl()
        for name, value in (("data", data), ("indices", indices), ("indptr", indptr)):
            if cl is None or not isinstance(value, require_pyopencl().array.Array):
                raise TypeError(f"{where}: {name} must be a pyopencl.array.Array, got {type(value).__name__}")
            if value.ndim != 1 or not value.flags.c_contiguous:
                raise ValueError(f"{where}: {name} must be a 1-D C-contiguous device array, got shape {value.shape}")
        self._check_dtypes(where, data.dtype, indices.dtype, indptr.dtype)
        if not (data.context == indices.context == indptr.context):
            raise ValueError(f"{where}: data, indices and indptr must belong to one pyopencl context")
        backend = backend_of_array(data)
        # Private copies of the structure, checked on the host: the caller keeps
        # its arrays and may change them, the kernels only see what was checked.
        host_indptr = backend.to_host(indptr)
        host_indices = backend.to_host(indices)
        self._init(
            backend,
            data,
            backend.from_host(host_indices),
            backend.from_host(host_indptr),
            shape,
            fmt,
            host_indptr,
            host_indices,
        )

    @staticmethod
    def _check_layout(where, shape, fmt):
        if fmt not in _SPARSE_FORMATS:
            raise ValueError(f"{where}: format must be 'csr' or 'csc', got {fmt!r}")
        try:
            shape = tuple(operator_index(s) for s in shape)
        except TypeError:
            raise TypeError(f"{where}: shape must be two ints, got {shape!r}") from None
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"{where}: shape must be two non-negative ints, got {shape}")
        return fmt, shape

    @staticmethod
    def _check_dtypes(where, data_dtype, indices_dtype, indptr_dtype):
        if data_dtype not in _SPARSE_DATA_DTYPES:
            raise TypeError(f"{where}: data must be float16, float32 or float64, got {data_dtype}")
        for name, dtype in (("indices", indices_dtype), ("indptr", indptr_dtype)):
            if dtype not in _SPARSE_INDEX_DTYPES:
                raise TypeError(f"{where}: {name} must be int32 or int64, got {dtype}")

    def _init(self, backend, data, indices, indptr, shape, fmt, host_indptr, host_indices):
        nnz = _check_sparse_structure("DeviceSparseMatrix", fmt, shape, host_indptr, host_indices, data.shape[0])
        self._data = data
        self._indices = indices
        self._indptr = indptr
        self._shape = shape
        self._format = fmt
        self._backend = backend
        self._nnz = nnz
        self._host_indptr = np.array(host_indptr, copy=True)
        self._host_indices = np.array(host_indices[:nnz], copy=True)
        self._cache = {}  # per-matrix facts and device arrays computed once (see caffe2op.ops.normalize)

    @classmethod
    def from_scipy(cls, matrix, device=None):
        """Copy a scipy CSR/CSC matrix or array to a device.

        Parameters
        ----------
        matrix : scipy.sparse.csr_matrix, csr_array, csc_matrix or csc_array
            2-D, float16/float32/float64 data, int32/int64 index arrays
            (their dtypes are kept).  Its structure is checked first.
        device : str or DeviceOption, optional
            ``"opencl"`` (the default device when None), ``"opencl:N"``,
            ``"cuda"``, ``"cuda:N"`` or a DeviceOption; or an
            :class:`OpenCLBackend`.

        Returns
        -------
        DeviceSparseMatrix
            A matrix on that device with copies of ``matrix``'s arrays.

        Raises
        ------
        TypeError
            If ``matrix`` is not a scipy CSR/CSC matrix or array (COO and the
            other formats: convert them with ``.tocsr()``/``.tocsc()``) or
            has the wrong dtypes.
        ValueError
            If it is not 2-D, its structure is invalid, or ``device`` is the CPU.
        RuntimeError
            If the device does not exist.

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, caffe2op
        >>> w = sp.csc_array(np.eye(3, dtype=np.float32))
        >>> d = caffe2op.DeviceSparseMatrix.from_scipy(w, "opencl")  # doctest: +SKIP
        >>> d.format, d.shape, d.nnz  # doctest: +SKIP
        ('csc', (3, 3), 3)
        """
        where = "DeviceSparseMatrix.from_scipy"
        fmt = getattr(matrix, "format", None)
        if type(matrix).__module__.split(".")[0] != "scipy" or fmt not in _SPARSE_FORMATS:
            raise TypeError(
                f"{where}: expected a scipy.sparse CSR or CSC matrix or array, got {type(matrix).__name__}"
                + (f" (format {fmt!r}); convert it with .tocsr() or .tocsc()" if fmt else "")
            )
        if len(matrix.shape) != 2:
            raise ValueError(f"{where}: the matrix must be 2-D, got shape {matrix.shape}")
        fmt, shape = cls._check_layout(where, matrix.shape, fmt)
        cls._check_dtypes(where, matrix.dtype, matrix.indices.dtype, matrix.indptr.dtype)
        _check_sparse_structure(where, fmt, shape, matrix.indptr, matrix.indices, matrix.data.shape[0])
        if isinstance(device, OpenCLBackend):
            backend = device
        else:
            option = resolve_device(device if device is not None else "opencl")
            if option.device_type == DeviceType.CPU:
                raise ValueError(f"{where}: device must be an OpenCL or CUDA device, got {device!r}")
            backend = backend_for(option)
        self = cls.__new__(cls)
        indptr = np.ascontiguousarray(matrix.indptr)
        indices = np.ascontiguousarray(matrix.indices)
        self._init(
            backend,
            backend.from_host(np.ascontiguousarray(matrix.data)),
            backend.from_host(indices),
            backend.from_host(indptr),
            shape,
            fmt,
            indptr,
            indices,
        )
        return self

    # Read-only: replacing an array, the shape or the format would let a kernel
    # index outside the buffers it was checked against.
    @property
    def data(self):
        """The values (pyopencl.array.Array, shared with the caller: they may be changed, not replaced)."""
        return self._data

    @property
    def shape(self):
        """``(rows, columns)`` (tuple of int)."""
        return self._shape

    @property
    def format(self):
        """``"csr"`` or ``"csc"`` (str)."""
        return self._format

    @property
    def backend(self):
        """The device (context and queue) the arrays belong to (OpenCLBackend)."""
        return self._backend

    @property
    def indices(self):
        """A device copy of the stored indices (pyopencl.array.Array; changing it changes nothing).

        The matrix keeps the structure it checked when it was made; the
        kernels read only that, so no change to an array a caller holds can
        make them read or write out of bounds.
        """
        return self.backend.copy(self._indices)

    @property
    def indptr(self):
        """A device copy of the index pointer (pyopencl.array.Array; changing it changes nothing)."""
        return self.backend.copy(self._indptr)

    @property
    def dtype(self):
        """The dtype of ``data`` (numpy.dtype)."""
        return self.data.dtype

    @property
    def nnz(self):
        """The number of stored entries, ``indptr[-1]`` (explicit zeros and duplicates included)."""
        return self._nnz

    def __repr__(self):
        return (
            f"<DeviceSparseMatrix {self.format.upper()} {self.shape[0]}x{self.shape[1]} {self.dtype}, "
            f"{self.nnz} stored entries, on {self.backend.name}>"
        )

    def same_structure(self, other):
        """Whether ``other`` has this matrix's format, shape and index structure (equal ``indptr`` and ``indices``).

        Compares the host copies of the structure: no device transfer.

        Parameters
        ----------
        other : object
            Anything.

        Returns
        -------
        bool
            True for a DeviceSparseMatrix with the same format, shape and
            stored indices (their dtypes may differ).

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, caffe2op
        >>> d = caffe2op.DeviceSparseMatrix.from_scipy(sp.csr_array(np.eye(2)), "opencl")  # doctest: +SKIP
        >>> d.same_structure(d.copy()), d.same_structure(None)  # doctest: +SKIP
        (True, False)
        """
        if not isinstance(other, DeviceSparseMatrix):
            return False
        if other is self:
            return True
        return (
            other.format == self.format
            and other.shape == self.shape
            and np.array_equal(other._host_indptr, self._host_indptr)
            and np.array_equal(other._host_indices, self._host_indices)
        )

    def copy(self):
        """A copy on the same device (device-to-device copies of the three arrays).

        Returns
        -------
        DeviceSparseMatrix
            A new matrix with the same structure and values.

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, caffe2op
        >>> d = caffe2op.DeviceSparseMatrix.from_scipy(sp.csr_array(np.eye(2)), "opencl")  # doctest: +SKIP
        >>> d.copy().data is d.data  # doctest: +SKIP
        False
        """
        new = type(self).__new__(type(self))
        backend = self.backend
        new._init(
            backend,
            backend.copy(self.data),
            backend.copy(self._indices),
            backend.copy(self._indptr),
            self.shape,
            self.format,
            self._host_indptr,
            self._host_indices,
        )
        return new

    def to_scipy(self):
        """Copy the matrix to the host as a scipy ``csr_array`` or ``csc_array`` (waits for pending work).

        Returns
        -------
        scipy.sparse.csr_array or scipy.sparse.csc_array
            With copies of the three arrays (index dtypes kept).

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, caffe2op
        >>> w = sp.csr_array(np.array([[0.0, 2.0]]))
        >>> caffe2op.DeviceSparseMatrix.from_scipy(w, "opencl").to_scipy().toarray()  # doctest: +SKIP
        array([[0., 2.]])
        """
        import scipy.sparse

        cls = scipy.sparse.csr_array if self.format == "csr" else scipy.sparse.csc_array
        data = self.backend.to_host(self.data)
        indices = self.backend.to_host(self._indices)
        indptr = self.backend.to_host(self._indptr)
        result = cls((data, indices, indptr), shape=self.shape, copy=False)
        # scipy may narrow the index arrays: keep them exactly as they were.
        result.indices = indices
        result.indptr = indptr
        return result
