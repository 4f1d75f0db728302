# SPDX-License-Identifier: BSD-3-Clause
"""Contexts, queues and :class:`OpenCLBackend`: blobs on one OpenCL device."""

import os
import sys
import threading
import weakref

import numpy as np

from ..core import DeviceOption, DeviceType
from .devices import _enumerate, _import_pyopencl, _info_of_cl_device, device_info, require_pyopencl

_LOCK = threading.RLock()
_STATES = {}  # device index -> (context, queue)
_BACKENDS = {}  # DeviceOption -> OpenCLBackend
_FOREIGN = weakref.WeakKeyDictionary()  # a caller's context -> OpenCLBackend (which holds it only weakly)
_INHERITED = []  # a fork child's copies of its parent's OpenCL objects: kept, never used or released
_AFTER_FORK = []  # more caches to empty in a fork child (the program cache registers itself)


_FORK = {"driver_from_parent": False}


def _forget_in_fork_child():
    """After ``os.fork()``: drop the parent's contexts, queues, backends and programs.

    A child shares none of the driver's threads, so a queue it inherited
    would wait forever.  When the parent never probed the OpenCL devices the
    child makes its own context and queue on first use.  When it did, the
    driver was initialised in the parent with worker threads the child does
    not have, and no OpenCL driver we know (PoCL, NVIDIA's) can be
    initialised again in the same process: the functional API then sends
    host-data calls to a helper process (:mod:`caffe2op.opencl.fork_proxy`),
    and anything that needs a device object in the child is refused with a
    RuntimeError (see :func:`_refuse_in_fork_child`) instead of hanging.
    The inherited objects are kept alive and never released: releasing
    them would call into the driver with the parent's state.
    """
    _LOCK._at_fork_reinit()  # another thread of the parent may have held it while forking
    # caffe2op's own probe, or the caller's use of pyopencl (which caffe2op cannot see: once
    # imported, assume the driver may have been initialised; the helper process is always safe).
    _FORK["driver_from_parent"] = (
        _FORK["driver_from_parent"] or _enumerate.cache_info().currsize > 0 or "pyopencl" in sys.modules
    )
    _INHERITED.append((dict(_STATES), dict(_BACKENDS), list(_FOREIGN.items())))
    _STATES.clear()
    _BACKENDS.clear()
    _FOREIGN.clear()
    for forget in _AFTER_FORK:
        forget(_INHERITED)


os.register_at_fork(after_in_child=_forget_in_fork_child)


def _reprobe_devices():
    """Forget every device, context, backend and program, and probe the devices again.

    For the tests that change ``CAFFE2OP_OPENCL_LIMITS`` (read when the
    devices are probed).  Arrays made before belong to contexts caffe2op no
    longer knows: they are then treated as a caller's own.
    """
    with _LOCK:
        _STATES.clear()
        _BACKENDS.clear()
        _FOREIGN.clear()
        inherited = []
        for forget in _AFTER_FORK:
            forget(inherited)
        _enumerate.cache_clear()


def _refuse_in_fork_child():
    """Raise in a fork child whose parent had initialised the OpenCL driver (it would hang otherwise)."""
    if _FORK["driver_from_parent"]:
        raise RuntimeError(
            "caffe2op: this process was forked (os.fork, multiprocessing's 'fork' start method) after its "
            "parent had initialised the OpenCL driver, whose worker threads a child does not inherit: OpenCL "
            "work would wait for ever.  Here the functional API on host data (sparse_normalize, normalize, "
            "stop_gradient with device=...) runs in a helper process, but device arrays and workspace blobs "
            "on a device cannot: start workers with multiprocessing.get_context('spawn') or 'forkserver', or "
            "fork before the parent's first OpenCL call.  CPU operators work in the child."
        )


def _device_state(info):
    """(context, queue) of device ``info``, created on first use."""
    _refuse_in_fork_child()
    with _LOCK:
        state = _STATES.get(info.index)
        if state is None:
            cl = require_pyopencl()
            device = _enumerate()[1][info.index]
            context = cl.Context([device])
            state = (context, cl.CommandQueue(context, device))
            _STATES[info.index] = state
        return state


class OpenCLBackend:
    """Blobs on one OpenCL device: C-contiguous ``pyopencl.array.Array`` objects.

    Get one with :func:`backend_for` (a device option) or
    :func:`backend_of_array` (an existing array); the interface is the one of
    :class:`caffe2op.devices.CPUBackend`.

    Parameters
    ----------
    device_option : DeviceOption
        The device option it serves.
    info : OpenCLDeviceInfo
        The device.
    context : pyopencl.Context
        Its context.
    queue : pyopencl.CommandQueue
        The queue its operations are enqueued on.
    foreign : bool, default False
        True for a context the caller created (not one of caffe2op's own).

    Attributes
    ----------
    name : str
        ``"OPENCL:i"`` or ``"CUDA:j"``, plus the device name (for a caller's
        context, a phrase that says it is not caffe2op's context).

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> from caffe2op.opencl import backend_for
    >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> backend.to_host(backend.from_host(np.arange(3)))  # doctest: +OPENCL
    array([0, 1, 2])
    """

    def __init__(self, device_option, info, context, queue, *, foreign=False):
        self.device_option = device_option
        self.info = info
        self.context = context
        self.queue = queue
        self.foreign = foreign
        kind = device_option.device_type.name
        self.name = f"{kind}:{device_option.device_id} ({info.name})"
        if foreign:  # the same device, but not caffe2op's context: say so first
            self.name = f"a caller's own pyopencl context on {self.name}"

    def __repr__(self):
        return f"OpenCLBackend({self.name})"

    @property
    def device(self):
        """The ``pyopencl.Device``."""
        return self.queue.device

    def check_allocation(self, op, shape, dtype):
        """Raise unless an array of ``shape`` and ``dtype`` can live on this device.

        Parameters
        ----------
        op : str
            Who asks, for the message (an operator name).
        shape : tuple of int
            Shape.
        dtype : numpy.dtype
            Element type.

        Raises
        ------
        TypeError
            For dtypes no device buffer holds (object, strings, void).
        ValueError
            If the array needs more bytes than the device's largest buffer
            (``CL_DEVICE_MAX_MEM_ALLOC_SIZE``); the message says how large that is.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> backend.check_allocation("ConstantFill", (2**40, 4), np.float32)  # doctest: +OPENCL +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ConstantFill: an array of shape (1099511627776, 4) and dtype float32 needs 17592186044416 bytes; ...
        """
        dtype = np.dtype(dtype)
        if dtype.kind in "OSUV":
            raise TypeError(f"{op}: arrays of dtype {dtype} cannot live on an OpenCL device ({self.name})")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > self.info.max_alloc_bytes:
            raise ValueError(
                f"{op}: an array of shape {tuple(shape)} and dtype {dtype} needs {nbytes} bytes; the largest "
                f"buffer {self.name} allows is {self.info.max_alloc_bytes} bytes "
                f"({self.info.max_alloc_bytes / 2**30:.2f} GiB)"
            )

    def empty(self, shape, dtype):
        """Allocate an uninitialised device array.

        Parameters
        ----------
        shape : tuple of int
            Shape.
        dtype : numpy.dtype
            Element type.

        Returns
        -------
        pyopencl.array.Array
            A new C-contiguous array on this device.

        Raises
        ------
        TypeError, ValueError
            See :meth:`check_allocation`.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> x = backend.empty((2, 3), np.float32)  # doctest: +OPENCL
        >>> x.shape, x.dtype, x.flags.c_contiguous  # doctest: +OPENCL
        ((2, 3), dtype('float32'), True)
        """
        self.check_allocation("OpenCL", shape, dtype)
        return require_pyopencl().array.empty(self.queue, tuple(shape), np.dtype(dtype))

    def owns(self, value):
        """Whether ``value`` is an array of this backend's context.

        Parameters
        ----------
        value : object
            A blob value.

        Returns
        -------
        bool
            True for ``pyopencl.array.Array`` objects of this context.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> backend.owns(backend.from_host(np.zeros(2))), backend.owns(np.zeros(2))  # doctest: +OPENCL
        (True, False)
        """
        cl = _import_pyopencl()
        return cl is not None and isinstance(value, cl.array.Array) and value.context == self.context

    def from_host(self, array):
        """Copy host data to a new device array.

        Parameters
        ----------
        array : numpy.ndarray
            Host data (any layout).

        Returns
        -------
        pyopencl.array.Array
            A C-contiguous device copy.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> x = backend.from_host(np.arange(6.0).reshape(2, 3)[:, ::2])  # a strided view is fine  # doctest: +OPENCL
        >>> backend.to_host(x)  # doctest: +OPENCL
        array([[0., 2.],
               [3., 5.]])
        """
        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        out = self.empty(array.shape, array.dtype)
        if array.size:
            out.set(array, queue=self.queue)
        return out

    def to_host(self, value):
        """Copy a device array to a new NumPy array (waits for pending work).

        Parameters
        ----------
        value : pyopencl.array.Array
            The blob.

        Returns
        -------
        numpy.ndarray
            The data.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> backend.to_host(backend.from_host(np.array([1, 2], dtype=np.int32)))  # doctest: +OPENCL
        array([1, 2], dtype=int32)
        """
        if value.size == 0:
            return np.empty(value.shape, value.dtype)
        return value.get(queue=self.queue)

    def copy(self, value):
        """A device-to-device copy of an array of this backend.

        Parameters
        ----------
        value : pyopencl.array.Array
            The blob.

        Returns
        -------
        pyopencl.array.Array
            A new C-contiguous array on this device.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> x = backend.from_host(np.arange(3.0))  # doctest: +OPENCL
        >>> y = backend.copy(x)  # doctest: +OPENCL
        >>> y is x, backend.to_host(y)  # doctest: +OPENCL
        (False, array([0., 1., 2.]))
        """
        out = self.empty(value.shape, value.dtype)
        copy_array(self.queue, value, out)
        return out

    def same_device(self, other):
        """Whether ``other`` is a backend of the same context (same device, no copy needed).

        Parameters
        ----------
        other : object
            Another backend.

        Returns
        -------
        bool
            True for an :class:`OpenCLBackend` of the same context.

        Examples
        --------
        ``OPENCL:i`` and the ``CUDA:j`` alias of the same NVIDIA device share one context:

        >>> import caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> backend.same_device(backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)))  # doctest: +OPENCL
        True
        """
        return isinstance(other, OpenCLBackend) and other.context == self.context


def backend_for(device_option):
    """The backend of an OPENCL or CUDA device option (one per option, created once).

    Parameters
    ----------
    device_option : DeviceOption
        The device.

    Returns
    -------
    OpenCLBackend
        Its backend; ``OPENCL:i`` and its ``CUDA:j`` alias share the context.

    Raises
    ------
    RuntimeError
        If the device does not exist (the message lists those that do),
        pyopencl is missing, or this is a fork child of a parent that had
        initialised the OpenCL driver (see :mod:`caffe2op.opencl`, Fork).

    Examples
    --------
    >>> import caffe2op
    >>> from caffe2op.opencl import backend_for
    >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> backend.name.startswith("OPENCL:0 ("), backend.info.index  # doctest: +OPENCL
    (True, 0)
    >>> backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, 99))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    RuntimeError: DeviceOption(CUDA, 99): no CUDA device (a device of an NVIDIA OpenCL platform) number 99, ...
    """
    _refuse_in_fork_child()
    with _LOCK:
        backend = _BACKENDS.get(device_option)
        if backend is None:
            info = device_info(device_option)
            context, queue = _device_state(info)
            backend = OpenCLBackend(device_option, info, context, queue)
            _BACKENDS[device_option] = backend
        return backend


def backend_of_array(value):
    """The backend a ``pyopencl.array.Array`` belongs to (None for other values).

    Parameters
    ----------
    value : object
        A blob value.

    Returns
    -------
    OpenCLBackend or None
        The ``OPENCL:i`` backend for arrays of caffe2op's own contexts; for an
        array of a caller's context, a backend of that context that enqueues
        on the array's queue.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> from caffe2op.opencl import backend_for, backend_of_array
    >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> backend_of_array(backend.from_host(np.zeros(3))) is backend  # doctest: +OPENCL
    True
    >>> backend_of_array(np.zeros(3)) is None
    True
    """
    cl = _import_pyopencl()
    if cl is None or not isinstance(value, require_pyopencl().array.Array):
        return None
    _refuse_in_fork_child()
    context = value.context
    with _LOCK:
        for index, (own_context, _) in _STATES.items():
            if own_context == context:
                return backend_for(DeviceOption(DeviceType.OPENCL, index))
        backend = _FOREIGN.get(context)
        if backend is None:
            queue = value.queue if value.queue is not None else cl.CommandQueue(context)
            info = _info_of_cl_device(queue.device)
            # The backend holds its own wrapper of the caller's context, never the
            # key object itself: a cached value referencing its weak key would keep
            # the caller's context alive for ever.
            own_context = cl.Context.from_int_ptr(context.int_ptr)
            backend = OpenCLBackend(DeviceOption(DeviceType.OPENCL, info.index), info, own_context, queue, foreign=True)
            _FOREIGN[context] = backend
        return backend


def copy_array(queue, src, dst):
    """Enqueue a device-to-device copy of ``src`` into ``dst`` (same context, shape and dtype).

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        Where to enqueue.
    src, dst : pyopencl.array.Array
        C-contiguous arrays of the same byte size (offsets are honoured).

    Returns
    -------
    pyopencl.Event or None
        The copy's event (None for empty arrays); it is also added to ``dst``.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> from caffe2op.opencl import backend_for, copy_array
    >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> src, dst = backend.from_host(np.arange(3.0)), backend.empty((3,), np.float64)  # doctest: +OPENCL
    >>> _ = copy_array(backend.queue, src, dst)  # doctest: +OPENCL
    >>> backend.to_host(dst)  # doctest: +OPENCL
    array([0., 1., 2.])
    """
    if src.nbytes == 0:
        return None
    cl = require_pyopencl()
    event = cl.enqueue_copy(
        queue,
        dst.base_data,
        src.base_data,
        byte_count=src.nbytes,
        src_offset=src.offset,
        dst_offset=dst.offset,
        wait_for=list(src.events) + list(dst.events) or None,
    )
    dst.add_event(event)
    return event


def copy_columns(queue, src, dst, rows, width, src_column, src_row_bytes, dst_column, dst_row_bytes):
    """Enqueue a copy of a ``rows`` x ``width``-byte block between two row-major device arrays.

    The block starts at byte column ``src_column`` of rows ``src_row_bytes``
    long in ``src`` and lands at byte column ``dst_column`` of rows
    ``dst_row_bytes`` long in ``dst`` (one rectangular copy: Concat writes
    each input into a column block of its output, Split reads each output
    from one).

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        Where to enqueue.
    src, dst : pyopencl.array.Array
        C-contiguous arrays of one context (offsets are honoured).
    rows, width : int
        The block: ``rows`` rows of ``width`` bytes (both > 0).
    src_column, src_row_bytes, dst_column, dst_row_bytes : int
        Where the block sits in each array, in bytes.

    Returns
    -------
    pyopencl.Event
        The copy's event; it is also added to ``dst``.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> from caffe2op.opencl import backend_for, copy_columns
    >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> src = backend.from_host(np.arange(6.0).reshape(2, 3))  # doctest: +OPENCL
    >>> dst = backend.empty((2, 1), np.float64)  # doctest: +OPENCL
    >>> _ = copy_columns(backend.queue, src, dst, 2, 8, 16, 24, 0, 8)  # doctest: +OPENCL
    >>> backend.to_host(dst)  # doctest: +OPENCL
    array([[2.],
           [5.]])
    """
    cl = require_pyopencl()
    event = cl.enqueue_copy(
        queue,
        dst.base_data,
        src.base_data,
        src_origin=(src.offset + src_column, 0, 0),
        dst_origin=(dst.offset + dst_column, 0, 0),
        region=(width, rows, 1),
        src_pitches=(src_row_bytes, src_row_bytes * rows),
        dst_pitches=(dst_row_bytes, dst_row_bytes * rows),
        wait_for=list(src.events) + list(dst.events) or None,
    )
    dst.add_event(event)
    return event
