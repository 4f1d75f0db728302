# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL device layer: which devices exist (pyopencl is imported lazily).

``DeviceOption(DeviceType.OPENCL, i)`` indexes :func:`opencl_devices`;
``DeviceOption(DeviceType.CUDA, i)`` indexes the devices of NVIDIA OpenCL
platforms alone.
"""

import dataclasses
import functools

__all__ = ["OpenCLDeviceInfo", "describe_platforms", "opencl_devices"]


@dataclasses.dataclass(frozen=True)
class OpenCLDeviceInfo:
    """Facts about one OpenCL device.

    Attributes
    ----------
    index : int
        Position in :func:`opencl_devices` (the ``device_id`` of ``DeviceType.OPENCL``).
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
    """(infos, cl devices, error) for every device of every platform, probed once."""
    cl = _import_pyopencl()
    if cl is None:
        return (), (), "pyopencl is not installed (pip install 'caffe2op[opencl]')"
    try:
        platforms = cl.get_platforms()
    except cl.Error as err:  # no ICD loader / no platform
        return (), (), f"no OpenCL platform ({err})"
    infos, devices = [], []
    cuda_count = 0
    for platform in platforms:
        try:
            platform_devices = platform.get_devices()
        except cl.Error:
            continue
        is_nvidia = "nvidia" in platform.name.lower() or "nvidia" in platform.vendor.lower()
        for device in platform_devices:
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
            cuda_count += is_nvidia
    return tuple(infos), tuple(devices), None if infos else "no OpenCL device found"


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
    """
    infos, _, problem = _enumerate()
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
