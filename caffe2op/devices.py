# SPDX-License-Identifier: BSD-3-Clause
"""Where blobs live: one backend object per device, found from a DeviceOption or a value.

A backend knows how to allocate an array on its device, copy host data in and
out, and tell whether a value lives on it.  The CPU backend holds NumPy
arrays.  OpenCL backends (``DeviceType.OPENCL`` and ``DeviceType.CUDA``) hold
``pyopencl.array.Array`` objects; they come from :mod:`caffe2op.opencl`, which
is imported only when a device option or a value asks for one, so that
``import caffe2op`` works on machines without OpenCL.
"""

import numpy as np

from .core import CPU_DEVICE, DeviceOption, DeviceType

__all__ = ["CPUBackend", "backend_for", "backend_of_value", "parse_device"]


class CPUBackend:
    """The host: blobs are C-contiguous NumPy arrays.

    Examples
    --------
    >>> from caffe2op.devices import backend_for
    >>> cpu = backend_for(None)
    >>> cpu.name, cpu.empty((2, 3), "float32").shape
    ('CPU', (2, 3))
    """

    device_option = CPU_DEVICE
    name = "CPU"

    def empty(self, shape, dtype):
        """Allocate an uninitialised array.

        Parameters
        ----------
        shape : tuple of int
            Shape.
        dtype : numpy.dtype
            Element type.

        Returns
        -------
        numpy.ndarray
            A new C-contiguous array.
        """
        return np.empty(shape, dtype)

    def owns(self, value):
        """Whether ``value`` is a blob of this device (a NumPy array).

        Parameters
        ----------
        value : object
            A blob value.

        Returns
        -------
        bool
            True for NumPy arrays.
        """
        return isinstance(value, np.ndarray)

    def from_host(self, array):
        """A C-contiguous copy of ``array`` owned by the workspace.

        Parameters
        ----------
        array : numpy.ndarray
            Host data.

        Returns
        -------
        numpy.ndarray
            The copy.
        """
        return np.array(array, copy=True, order="C")

    def copy(self, value):
        """A copy of a blob of this device, on this device.

        Parameters
        ----------
        value : numpy.ndarray
            The blob.

        Returns
        -------
        numpy.ndarray
            A C-contiguous copy.
        """
        return np.array(value, copy=True, order="C")

    def to_host(self, value):
        """A NumPy copy of a blob of this device.

        Parameters
        ----------
        value : numpy.ndarray
            The blob.

        Returns
        -------
        numpy.ndarray
            A copy the caller may modify.
        """
        return np.array(value, copy=True)

    def same_device(self, other):
        """Whether ``other`` is a backend of the same physical device.

        Parameters
        ----------
        other : object
            Another backend.

        Returns
        -------
        bool
            True for the CPU backend.
        """
        return isinstance(other, CPUBackend)


_CPU = CPUBackend()


def backend_for(device_option):
    """The backend of a device option (None means the CPU).

    Parameters
    ----------
    device_option : DeviceOption or None
        The device.

    Returns
    -------
    object
        Its backend.

    Raises
    ------
    TypeError
        If ``device_option`` is not a DeviceOption or None.
    RuntimeError
        If an OpenCL or CUDA device is asked for and none is available.
    """
    if device_option is None or (device_option.device_type == DeviceType.CPU):
        if device_option is not None and not isinstance(device_option, DeviceOption):
            raise TypeError(f"expected a DeviceOption, got {type(device_option).__name__}")
        return _CPU
    if not isinstance(device_option, DeviceOption):
        raise TypeError(f"expected a DeviceOption, got {type(device_option).__name__}")
    from . import opencl

    return opencl.backend_for(device_option)


def backend_of_value(value):
    """The backend a blob value lives on, or None for values no backend holds.

    Parameters
    ----------
    value : object
        A blob value.

    Returns
    -------
    object or None
        The CPU backend for NumPy arrays, an OpenCL backend for
        ``pyopencl.array.Array`` values, else None.
    """
    if isinstance(value, np.ndarray):
        return _CPU
    module = type(value).__module__ or ""
    if module.startswith("pyopencl"):
        from . import opencl

        return opencl.backend_of_array(value)
    return None


_DEVICE_KINDS = {"cpu": DeviceType.CPU, "opencl": DeviceType.OPENCL, "cuda": DeviceType.CUDA, "gpu": DeviceType.CUDA}
_DEVICE_FORMS = "'cpu', 'opencl', 'opencl:N', 'cuda' or 'cuda:N'"


def parse_device(device, where="device"):
    """Turn a device name (``device=`` of the functional API, ``--device``) into a DeviceOption.

    The one parser of device names: every entry point that takes a name
    calls it, so that they all accept and reject the same names.

    Parameters
    ----------
    device : str, DeviceOption or None
        ``"cpu"`` (also ``"cpu:0"``: there is one CPU device), ``"opencl"``
        (the default OpenCL device, see
        :func:`caffe2op.opencl.default_device`), ``"opencl:N"``, ``"cuda"``
        (``CUDA:0``; ``"gpu"`` is a synonym), ``"cuda:N"``, a DeviceOption,
        or None (returned as is).  Case and surrounding spaces are ignored.
    where : str, default "device"
        What the value is, for error messages (e.g. ``"Sum: device"``).

    Returns
    -------
    DeviceOption or None
        None when ``device`` is None.

    Raises
    ------
    TypeError
        If ``device`` is neither a str, a DeviceOption nor None.
    ValueError
        If the string is not one of the forms above (``"cpu:1"`` included).
    RuntimeError
        For ``"opencl"`` when no OpenCL device exists.

    Examples
    --------
    >>> from caffe2op.devices import parse_device
    >>> parse_device("cuda:1")
    DeviceOption(device_type=<DeviceType.CUDA: 1>, device_id=1)
    >>> parse_device(" CPU ").device_type.name
    'CPU'
    >>> parse_device("cpu:1")
    Traceback (most recent call last):
    ...
    ValueError: device 'cpu:1' is not a device: there is one CPU device ('cpu' or 'cpu:0')
    """
    if device is None or isinstance(device, DeviceOption):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{where} must be a str such as 'opencl' or a DeviceOption, got {type(device).__name__}")
    name, colon, number = device.strip().lower().partition(":")
    name, number = name.strip(), number.strip()
    if name not in _DEVICE_KINDS or (colon and not (number.isascii() and number.isdigit())):
        raise ValueError(f"{where} {device!r} is not {_DEVICE_FORMS}")
    kind = _DEVICE_KINDS[name]
    if kind == DeviceType.CPU:
        if colon and int(number) != 0:
            raise ValueError(f"{where} {device!r} is not a device: there is one CPU device ('cpu' or 'cpu:0')")
        return CPU_DEVICE
    if kind == DeviceType.OPENCL and not colon:
        from . import opencl

        return opencl.default_device()
    return DeviceOption(kind, int(number) if colon else 0)
