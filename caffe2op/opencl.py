# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL device layer: devices, contexts, programs and the OpenCL backend.

pyopencl is imported lazily, the first time a device is used, so that
``import caffe2op`` works on machines without OpenCL.

Devices
    :func:`~caffe2op.opencl_devices` lists every device of every OpenCL platform.
    ``DeviceOption(DeviceType.OPENCL, i)`` is the ``i``-th of them;
    ``DeviceOption(DeviceType.CUDA, i)`` the ``i``-th device of an NVIDIA
    OpenCL platform (Caffe2's CUDA operators run there as OpenCL kernels).
    Asking for a device that does not exist raises a ``RuntimeError`` that
    lists the available ones.  :func:`default_device` is the device that
    ``device="opencl"`` means: ``CAFFE2OP_OPENCL_DEVICE`` (an index into
    :func:`~caffe2op.opencl_devices`, or a piece of a device or platform name), else
    pyopencl's ``PYOPENCL_CTX`` (``"platform[:device]"`` indices or a
    platform name), else device 0.

Contexts and queues
    One context and one in-order queue per device, created on first use and
    shared by ``OPENCL:i`` and the ``CUDA:j`` alias of the same device.

Blobs
    Device blobs are C-contiguous ``pyopencl.array.Array`` objects owned by
    an :class:`OpenCLBackend`.  Arrays a caller made in its own pyopencl
    context belong to a backend of that context (the functional API runs
    kernels on their queue); the workspace copies them through the host when
    they have to move to one of its devices.

Sparse matrices
    :class:`DeviceSparseMatrix` holds a CSR or CSC matrix as three device
    arrays (``data``, ``indices``, ``indptr``); its structure is checked on
    the host once, when it is made.  :func:`caffe2op.normalize` takes it.

Kernels
    The OpenCL C sources live in the package ``caffe2op._cl`` (the
    ``opencl_kernels/`` folder of the source tree), found with
    :mod:`importlib.resources` and passed to the compiler as ``-I``.
    :func:`get_program` builds one program per (context, file, ``-D``
    options) and keeps it; dtype variants are ``-D`` options
    (:func:`dtype_defines`), never spliced source.  pyopencl's disk cache
    keeps the binaries between processes (it hashes included headers too).
    An operator module adds a kernel with a ``.cl`` file and three calls::

        defines = opencl.dtype_defines("MyOp", x.dtype, backend.info)
        program = opencl.get_program(backend.context, "my_op.cl", defines)
        kernel = opencl.get_kernel(program, "caffe2op_my_op_fwd")
        size = opencl.elementwise_size(backend.queue, x.size)
        opencl.launch(backend.queue, kernel, size, None, out.base_data, x.base_data, np.uint64(x.size))
"""

import dataclasses
import functools
import importlib.resources
import os
import pathlib
import threading
import weakref
from operator import index as operator_index

import numpy as np

from .core import DeviceOption, DeviceType

__all__ = [
    "DeviceSparseMatrix",
    "OpenCLBackend",
    "OpenCLDeviceInfo",
    "backend_for",
    "backend_of_array",
    "c_type",
    "copy_array",
    "default_device",
    "describe_platforms",
    "device_info",
    "dtype_defines",
    "elementwise_size",
    "get_kernel",
    "get_program",
    "kernel_dir",
    "launch",
    "opencl_devices",
    "require_pyopencl",
    "resolve_device",
]


@dataclasses.dataclass(frozen=True)
class OpenCLDeviceInfo:
    """Facts about one OpenCL device.

    Attributes
    ----------
    index : int
        Position in :func:`~caffe2op.opencl_devices` (the ``device_id`` of ``DeviceType.OPENCL``).
    cuda_index : int or None
        Position among NVIDIA devices (the ``device_id`` of ``DeviceType.CUDA``), or None.
    platform : str
        Platform name.
    name : str
        Device name.
    vendor : str
        Device vendor.
    version : str
        OpenCL version string of the device.
    driver_version : str
        Driver version.
    fp64 : bool
        Whether the device supports double precision (``cl_khr_fp64``).
    fp16 : bool
        Whether the device supports half arithmetic (``cl_khr_fp16``); float16
        tables work either way (``vload_half``/``vstore_half``).
    global_mem_bytes : int
        Global memory size.
    max_alloc_bytes : int
        Largest single buffer.
    compute_units : int
        Number of compute units.

    Examples
    --------
    >>> import caffe2op
    >>> all(isinstance(d, caffe2op.OpenCLDeviceInfo) for d in caffe2op.opencl_devices())
    True
    >>> for d in caffe2op.opencl_devices():  # doctest: +SKIP
    ...     print(d.index, d.cuda_index, d.name, d.fp64, d.global_mem_bytes >> 30)
    0 None pthread-skylake-avx512-AMD EPYC True 10
    """

    index: int
    cuda_index: object
    platform: str
    name: str
    vendor: str
    version: str
    driver_version: str
    fp64: bool
    fp16: bool
    global_mem_bytes: int
    max_alloc_bytes: int
    compute_units: int


def _import_pyopencl():
    try:
        import pyopencl
    except ImportError:
        return None
    return pyopencl


@functools.cache
def _enumerate():
    """(infos, cl devices, problem, (platform index, device index, platform name)) of every device, probed once."""
    cl = _import_pyopencl()
    if cl is None:
        return (), (), "pyopencl is not installed (pip install 'caffe2op[opencl]')", ()
    try:
        platforms = cl.get_platforms()
    except cl.Error as err:  # no ICD loader / no platform
        return (), (), f"no OpenCL platform ({err})", ()
    infos, devices, positions = [], [], []
    cuda_count = 0
    for platform_index, platform in enumerate(platforms):
        try:
            platform_devices = platform.get_devices()
        except cl.Error:
            continue
        is_nvidia = "nvidia" in platform.name.lower() or "nvidia" in platform.vendor.lower()
        for device_index, device in enumerate(platform_devices):
            extensions = device.extensions.split()
            infos.append(
                OpenCLDeviceInfo(
                    index=len(infos),
                    cuda_index=cuda_count if is_nvidia else None,
                    platform=platform.name.strip(),
                    name=device.name.strip(),
                    vendor=device.vendor.strip(),
                    version=device.version.strip(),
                    driver_version=device.driver_version.strip(),
                    fp64="cl_khr_fp64" in extensions or device.double_fp_config != 0,
                    fp16="cl_khr_fp16" in extensions,
                    global_mem_bytes=int(device.global_mem_size),
                    max_alloc_bytes=int(device.max_mem_alloc_size),
                    compute_units=int(device.max_compute_units),
                )
            )
            devices.append(device)
            positions.append((platform_index, device_index, platform.name.strip()))
            cuda_count += is_nvidia
    return tuple(infos), tuple(devices), None if infos else "no OpenCL device found", tuple(positions)


def opencl_devices():
    """Every OpenCL device of every platform, in a stable order.

    Returns
    -------
    list of OpenCLDeviceInfo
        Empty when pyopencl is missing or no platform is installed.

    Examples
    --------
    >>> import caffe2op
    >>> devices = caffe2op.opencl_devices()
    >>> all(d.index == i for i, d in enumerate(devices))
    True
    """
    return list(_enumerate()[0])


def describe_platforms():
    """Lines describing the OpenCL devices for :func:`caffe2op.show_config` (never raises).

    Returns
    -------
    list of str
        One line per device, or one line saying why there is none.

    Examples
    --------
    >>> from caffe2op.opencl import describe_platforms
    >>> lines = describe_platforms()
    >>> len(lines) >= 1
    True
    >>> print(lines[0])  # doctest: +SKIP
    [OPENCL:0] pthread-skylake-avx512-AMD EPYC (Portable Computing Language; OpenCL 3.0 PoCL ...; ...)
    """
    infos, _, problem, _ = _enumerate()
    if not infos:
        return [problem]
    lines = []
    for d in infos:
        tags = [f"OPENCL:{d.index}"] + ([f"CUDA:{d.cuda_index}"] if d.cuda_index is not None else [])
        lines.append(
            f"[{', '.join(tags)}] {d.name} ({d.platform}; {d.version}; "
            f"fp64 {'yes' if d.fp64 else 'no'}, fp16 {'yes' if d.fp16 else 'no'}; "
            f"{d.global_mem_bytes / 2**30:.1f} GiB)"
        )
    return lines


# --- pyopencl, lazily ------------------------------------------------------


def require_pyopencl():
    """Import and return pyopencl, or raise a clear error.

    Returns
    -------
    module
        The ``pyopencl`` module (with ``pyopencl.array`` imported).

    Raises
    ------
    RuntimeError
        If pyopencl is not installed.

    Examples
    --------
    >>> from caffe2op.opencl import require_pyopencl
    >>> cl = require_pyopencl()  # doctest: +OPENCL
    >>> cl.array.Array.__name__  # doctest: +OPENCL
    'Array'
    """
    cl = _import_pyopencl()
    if cl is None:
        raise RuntimeError("caffe2op: OpenCL devices need pyopencl: pip install 'caffe2op[opencl]'")
    import pyopencl.array  # noqa: F401  (registers the submodule)

    return cl


# --- which device ----------------------------------------------------------


def _available_text(infos, problem):
    if not infos:
        return f"no OpenCL device is available ({problem})"
    names = []
    for d in infos:
        tag = f"OPENCL:{d.index}" + (f" = CUDA:{d.cuda_index}" if d.cuda_index is not None else "")
        names.append(f"{tag} {d.name} ({d.platform})")
    return "available: " + "; ".join(names)


def device_info(device_option):
    """The :class:`~caffe2op.OpenCLDeviceInfo` an OPENCL or CUDA device option designates.

    Parameters
    ----------
    device_option : DeviceOption
        ``DeviceType.OPENCL`` (``device_id`` indexes :func:`~caffe2op.opencl_devices`)
        or ``DeviceType.CUDA`` (``device_id`` indexes the NVIDIA devices).

    Returns
    -------
    OpenCLDeviceInfo
        The device.

    Raises
    ------
    TypeError
        If ``device_option`` is not a DeviceOption.
    ValueError
        If it is a CPU device option.
    RuntimeError
        If no such device exists; the message lists the available ones.

    Examples
    --------
    >>> import caffe2op
    >>> from caffe2op.opencl import device_info
    >>> device_info(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 99))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: DeviceOption(OPENCL, 99): ...
    """
    if not isinstance(device_option, DeviceOption):
        raise TypeError(f"expected a DeviceOption, got {type(device_option).__name__}")
    infos, _, problem, _ = _enumerate()
    kind, index = device_option.device_type, device_option.device_id
    if kind == DeviceType.OPENCL:
        candidates = list(infos)
        what = "OpenCL device"
    elif kind == DeviceType.CUDA:
        candidates = [d for d in infos if d.cuda_index is not None]
        what = "CUDA device (a device of an NVIDIA OpenCL platform)"
    else:
        raise ValueError(f"DeviceOption({kind.name}, {index}) is not an OpenCL or CUDA device")
    if index < len(candidates):
        return candidates[index]
    have = f"there are {len(candidates)}" if candidates else "there is none"
    raise RuntimeError(
        f"DeviceOption({kind.name}, {index}): no {what} number {index}, {have}; {_available_text(infos, problem)}"
    )


def _parse_device_choice(text, source, infos, positions):
    """Index into ``infos`` chosen by an environment variable's value."""
    text = text.strip()
    if source == "PYOPENCL_CTX":
        platform, _, device = text.partition(":")
        device = int(device) if device.isdigit() else 0
        for i, (p, d, name) in enumerate(positions):
            chosen = p == int(platform) if platform.isdigit() else platform.lower() in name.lower()
            if chosen and d == device:
                return i
        return None
    if text.isdigit():
        return int(text) if int(text) < len(infos) else None
    for d in infos:
        if text.lower() in d.name.lower() or text.lower() in d.platform.lower():
            return d.index
    return None


def default_device():
    """The device ``device="opencl"`` means, as a DeviceOption.

    ``CAFFE2OP_OPENCL_DEVICE`` picks it (an index into :func:`~caffe2op.opencl_devices`
    or a case-insensitive piece of a device or platform name); otherwise
    pyopencl's ``PYOPENCL_CTX`` (``"platform"``, ``"platform:device"`` or a
    platform name); otherwise the first device.

    Returns
    -------
    DeviceOption
        ``DeviceOption(DeviceType.OPENCL, index)``.

    Raises
    ------
    RuntimeError
        If there is no OpenCL device, or the environment names one that does
        not exist (the message lists the available ones).

    Examples
    --------
    >>> from caffe2op.opencl import default_device, opencl_devices
    >>> default_device().device_type.name if opencl_devices() else "OPENCL"
    'OPENCL'
    """
    infos, _, problem, positions = _enumerate()
    if not infos:
        raise RuntimeError(f"caffe2op: {_available_text(infos, problem)}")
    for source in ("CAFFE2OP_OPENCL_DEVICE", "PYOPENCL_CTX"):
        value = os.environ.get(source, "").strip()
        if value:
            index = _parse_device_choice(value, source, infos, positions)
            if index is None:
                raise RuntimeError(f"caffe2op: {source}={value!r} names no OpenCL device; {_available_text(infos, '')}")
            return DeviceOption(DeviceType.OPENCL, index)
    return DeviceOption(DeviceType.OPENCL, 0)


def resolve_device(device):
    """Turn a ``device=`` argument of the functional API into a DeviceOption.

    Parameters
    ----------
    device : str, DeviceOption or None
        ``"cpu"``, ``"opencl"`` (the :func:`default_device`), ``"opencl:N"``,
        ``"cuda"`` (``CUDA:0``), ``"cuda:N"``, a DeviceOption, or None.

    Returns
    -------
    DeviceOption or None
        None when ``device`` is None.

    Raises
    ------
    TypeError
        If ``device`` has another type.
    ValueError
        If the string is not one of the forms above.
    RuntimeError
        For ``"opencl"`` when no OpenCL device exists.

    Examples
    --------
    >>> from caffe2op.opencl import resolve_device
    >>> resolve_device("cuda:1")
    DeviceOption(device_type=<DeviceType.CUDA: 1>, device_id=1)
    >>> resolve_device("cpu").device_type.name
    'CPU'
    """
    if device is None or isinstance(device, DeviceOption):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'opencl' or a DeviceOption, got {type(device).__name__}")
    text = device.strip().lower()
    name, _, number = text.partition(":")
    kinds = {"cpu": DeviceType.CPU, "opencl": DeviceType.OPENCL, "cuda": DeviceType.CUDA, "gpu": DeviceType.CUDA}
    if name not in kinds or (number and not number.isdigit()):
        raise ValueError(f"device {device!r} is not 'cpu', 'opencl', 'opencl:N', 'cuda' or 'cuda:N'")
    if name == "opencl" and not number:
        return default_device()
    return DeviceOption(kinds[name], int(number) if number else 0)


def _info_of_cl_device(device):
    _, devices, _, _ = _enumerate()
    infos = _enumerate()[0]
    for info, candidate in zip(infos, devices, strict=True):
        if candidate == device:
            return info
    raise RuntimeError(f"caffe2op: the OpenCL device {device.name!r} is not among opencl_devices()")


# --- contexts, queues, backends --------------------------------------------

_LOCK = threading.RLock()
_STATES = {}  # device index -> (context, queue)
_BACKENDS = {}  # DeviceOption -> OpenCLBackend
_FOREIGN = weakref.WeakKeyDictionary()  # a caller's context -> OpenCLBackend


def _device_state(info):
    """(context, queue) of device ``info``, created on first use."""
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
        ``"OPENCL:i"`` or ``"CUDA:j"``, plus the device name.

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
        where = " in a caller's pyopencl context" if foreign else ""
        self.name = f"{kind}:{device_option.device_id} ({info.name}{where})"

    def __repr__(self):
        return f"OpenCLBackend({self.name})"

    @property
    def device(self):
        """The ``pyopencl.Device``."""
        return self.queue.device

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

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> from caffe2op.opencl import backend_for
        >>> backend = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
        >>> x = backend.empty((2, 3), np.float32)  # doctest: +OPENCL
        >>> x.shape, x.dtype, x.flags.c_contiguous  # doctest: +OPENCL
        ((2, 3), dtype('float32'), True)
        """
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
        If the device does not exist (the message lists those that do) or
        pyopencl is missing.

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
    context = value.context
    with _LOCK:
        for index, (own_context, _) in _STATES.items():
            if own_context == context:
                return backend_for(DeviceOption(DeviceType.OPENCL, index))
        backend = _FOREIGN.get(context)
        if backend is None:
            queue = value.queue if value.queue is not None else cl.CommandQueue(context)
            info = _info_of_cl_device(queue.device)
            backend = OpenCLBackend(DeviceOption(DeviceType.OPENCL, info.index), info, context, queue, foreign=True)
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


# --- programs and kernels --------------------------------------------------

_PROGRAMS = weakref.WeakKeyDictionary()  # context -> {(file, options): program}
_KERNELS = weakref.WeakKeyDictionary()  # program -> {name: kernel}
_LAUNCH_LOCK = threading.Lock()

_C_TYPES = {
    np.dtype(np.int8): "char",
    np.dtype(np.uint8): "uchar",
    np.dtype(np.int16): "short",
    np.dtype(np.uint16): "ushort",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "uint",
    np.dtype(np.int64): "long",
    np.dtype(np.uint64): "ulong",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}


@functools.cache
def kernel_dir():
    """The folder holding the installed ``.cl`` and ``.h`` files (package ``caffe2op._cl``).

    Returns
    -------
    pathlib.Path
        Found with :mod:`importlib.resources` (``__file__`` as a fallback).

    Examples
    --------
    >>> from caffe2op.opencl import kernel_dir
    >>> (kernel_dir() / "caffe2op_common.h").is_file()
    True
    """
    files = importlib.resources.files("caffe2op._cl")
    if isinstance(files, pathlib.Path):
        return files
    import caffe2op._cl

    return pathlib.Path(caffe2op._cl.__file__).resolve().parent


def c_type(dtype):
    """The OpenCL C name of an integer or float NumPy dtype (``"float"``, ``"long"``, ...).

    Parameters
    ----------
    dtype : numpy.dtype
        The dtype (not float16 or bool: see :func:`dtype_defines`).

    Returns
    -------
    str
        The OpenCL C type.

    Raises
    ------
    TypeError
        If OpenCL C has no such scalar type.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.opencl import c_type
    >>> c_type(np.uint64)
    'ulong'
    """
    try:
        return _C_TYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no OpenCL C scalar type for dtype {np.dtype(dtype)}") from None


def dtype_defines(op, dtype, info):
    """The ``-D`` definitions of a kernel on arrays of ``dtype`` (``REAL`` and the fp16/fp64 switches).

    Parameters
    ----------
    op : str
        Operator name, for error messages.
    dtype : numpy.dtype
        Element type: float16 (``half`` storage, float arithmetic), float32,
        float64, or an integer type.
    info : OpenCLDeviceInfo
        The device, for fp64 support.

    Returns
    -------
    dict
        ``{"REAL": ctype, ...}``.

    Raises
    ------
    TypeError
        For float64 on a device without ``cl_khr_fp64``, or a dtype no
        kernel handles (bool, complex, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.opencl import OpenCLDeviceInfo, dtype_defines
    >>> info = OpenCLDeviceInfo(0, None, "p", "d", "v", "OpenCL 3.0", "1", False, False, 1, 1, 1)
    >>> dtype_defines("Sum", np.float16, info)
    {'REAL': 'float', 'CAFFE2OP_HALF': 1}
    >>> dtype_defines("Sum", np.float64, info)
    Traceback (most recent call last):
    ...
    TypeError: Sum: float64 needs an OpenCL device with double precision (cl_khr_fp64); d has none
    """
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return {"REAL": "float", "CAFFE2OP_HALF": 1}
    if dtype == np.float64 and not info.fp64:
        raise TypeError(
            f"{op}: float64 needs an OpenCL device with double precision (cl_khr_fp64); {info.name} has none"
        )
    if dtype not in _C_TYPES:
        raise TypeError(f"{op}: OpenCL kernels do not handle dtype {dtype}")
    defines = {"REAL": _C_TYPES[dtype]}
    if dtype == np.float64:
        defines["CAFFE2OP_FP64"] = 1
    return defines


def get_program(context, filename, defines=None):
    """The built program of kernel file ``filename`` for ``context`` and ``defines`` (built once).

    The source handed to the compiler is ``#include "<filename>"`` with the
    kernel folder as ``-I``, so the ``.cl`` file is compiled as it is (with
    its ``#pragma once``) and pyopencl's disk cache tracks it and its headers.

    Parameters
    ----------
    context : pyopencl.Context
        The context.
    filename : str
        A file of :func:`kernel_dir`, e.g. ``"sparse_normalize.cl"``.
    defines : dict, optional
        ``{name: value}`` passed as ``-D name=value`` (sorted, so equal
        dicts share a program).

    Returns
    -------
    pyopencl.Program
        The built program.

    Raises
    ------
    ValueError
        If there is no such kernel file.
    pyopencl.RuntimeError
        If the build fails (the message holds the build log).

    Examples
    --------
    Programs are built once per context, file and definitions:

    >>> import numpy as np, caffe2op
    >>> from caffe2op import opencl
    >>> backend = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> defines = opencl.dtype_defines("Sum", np.float32, backend.info)  # doctest: +OPENCL
    >>> program = opencl.get_program(backend.context, "sum.cl", defines)  # doctest: +OPENCL
    >>> program is opencl.get_program(backend.context, "sum.cl", {"REAL": "float"})  # doctest: +OPENCL
    True
    >>> opencl.get_program(None, "no_such_kernel.cl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: caffe2op: no OpenCL kernel file 'no_such_kernel.cl' in ...
    """
    path = kernel_dir() / filename
    if "/" in filename or "\\" in filename or not path.is_file():
        raise ValueError(f"caffe2op: no OpenCL kernel file {filename!r} in {kernel_dir()}")
    options = []
    for name, value in sorted((defines or {}).items()):
        options += ["-D", f"{name}={value}"]
    options += ["-I", str(kernel_dir())]
    key = (filename, tuple(options))
    with _LOCK:
        programs = _PROGRAMS.setdefault(context, {})
        program = programs.get(key)
        if program is None:
            cl = require_pyopencl()
            program = cl.Program(context, f'#include "{filename}"\n').build(options=options)
            programs[key] = program
        return program


def get_kernel(program, name):
    """Kernel ``name`` of ``program`` (one ``pyopencl.Kernel`` object per program and name).

    Parameters
    ----------
    program : pyopencl.Program
        A program from :func:`get_program`.
    name : str
        Kernel name (``caffe2op_<op>_<fwd|bwd>``).

    Returns
    -------
    pyopencl.Kernel
        The kernel; launch it with :func:`launch`.

    Examples
    --------
    >>> import caffe2op
    >>> from caffe2op import opencl
    >>> backend = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> program = opencl.get_program(backend.context, "sum.cl", {"REAL": "float"})  # doctest: +OPENCL
    >>> kernel = opencl.get_kernel(program, "caffe2op_sum_fwd")  # doctest: +OPENCL
    >>> kernel.function_name, kernel is opencl.get_kernel(program, "caffe2op_sum_fwd")  # doctest: +OPENCL
    ('caffe2op_sum_fwd', True)
    """
    with _LOCK:
        kernels = _KERNELS.setdefault(program, {})
        kernel = kernels.get(name)
        if kernel is None:
            kernel = kernels[name] = require_pyopencl().Kernel(program, name)
        return kernel


def launch(queue, kernel, global_size, local_size, *args, wait_for=None):
    """Set ``kernel``'s arguments and enqueue it (thread-safe: arguments live on the kernel object).

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        Where to enqueue.
    kernel : pyopencl.Kernel
        From :func:`get_kernel`.
    global_size, local_size : tuple of int or None
        NDRange sizes.
    *args
        Kernel arguments: buffers, NumPy scalars of the declared types,
        ``pyopencl.LocalMemory``.
    wait_for : list of pyopencl.Event, optional
        Events to wait for.

    Returns
    -------
    pyopencl.Event
        The launch's event.

    Examples
    --------
    Fill a device array with ``constant_fill.cl``, as the ConstantFill operator does:

    >>> import numpy as np, caffe2op
    >>> from caffe2op import opencl
    >>> backend = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> out = backend.empty((4,), np.float32)  # doctest: +OPENCL
    >>> program = opencl.get_program(backend.context, "constant_fill.cl", {"REAL": "float"})  # doctest: +OPENCL
    >>> kernel = opencl.get_kernel(program, "caffe2op_constant_fill_fwd")  # doctest: +OPENCL
    >>> size = opencl.elementwise_size(backend.queue, out.size)  # doctest: +OPENCL
    >>> event = opencl.launch(  # doctest: +OPENCL
    ...     backend.queue, kernel, size, None, out.base_data, np.float32(2.5), np.uint64(out.size)
    ... )
    >>> out.add_event(event)  # doctest: +OPENCL
    >>> backend.to_host(out)  # doctest: +OPENCL
    array([2.5, 2.5, 2.5, 2.5], dtype=float32)
    """
    cl = require_pyopencl()
    with _LAUNCH_LOCK:
        kernel.set_args(*args)
        return cl.enqueue_nd_range_kernel(queue, kernel, global_size, local_size, wait_for=wait_for or None)


def accumulates_in_double(dtype, info):
    """Whether a kernel reducing data of ``dtype`` on the device ``info`` sums in double.

    float64 data always; float32 data on devices with fp64, as the CPU
    kernels do; float16 data never (it is summed in float, as Caffe2 did).
    """
    return dtype == np.float64 or (dtype == np.float32 and info.fp64)


def elementwise_size(queue, n):
    """A global size for a grid-stride kernel (``C2O_FOR_EACH``) over ``n`` elements.

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        The queue (its device's compute units bound the size).
    n : int
        Number of elements.

    Returns
    -------
    tuple of int or None
        ``(size,)`` with ``1 <= size <= n``, or None when ``n`` is 0.

    Examples
    --------
    >>> import caffe2op
    >>> from caffe2op import opencl
    >>> queue = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)).queue  # doctest: +OPENCL
    >>> opencl.elementwise_size(queue, 10), opencl.elementwise_size(queue, 0)  # doctest: +OPENCL
    ((10,), None)
    >>> opencl.elementwise_size(queue, 10**12)[0] <= 1024 * queue.device.max_compute_units  # doctest: +OPENCL
    True
    """
    if n == 0:
        return None
    cap = max(1, queue.device.max_compute_units) * 1024
    return (int(min(n, cap)),)


# --- sparse matrices on a device -------------------------------------------

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
        ``indices`` may be longer than ``nnz = indptr[-1]``.  The arrays are
        used as they are, not copied.
    shape : tuple of int
        ``(rows, columns)``.
    format : {"csr", "csc"}, default "csr"
        The storage format.

    Attributes
    ----------
    data, indices, indptr : pyopencl.array.Array
        The device arrays.
    shape : tuple of int
        ``(rows, columns)``.
    format : str
        ``"csr"`` or ``"csc"``.
    backend : OpenCLBackend
        The device (context and queue) the arrays belong to.

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
        host_indptr = backend.to_host(indptr)
        host_indices = backend.to_host(indices)
        self._init(backend, data, indices, indptr, shape, fmt, host_indptr, host_indices)

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
        self.data = data
        self.indices = indices
        self.indptr = indptr
        self.shape = shape
        self.format = fmt
        self.backend = backend
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
            backend.copy(self.indices),
            backend.copy(self.indptr),
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
        indices = self.backend.to_host(self.indices)
        indptr = self.backend.to_host(self.indptr)
        result = cls((data, indices, indptr), shape=self.shape, copy=False)
        # scipy may narrow the index arrays: keep them exactly as they were.
        result.indices = indices
        result.indptr = indptr
        return result
