# SPDX-License-Identifier: BSD-3-Clause
"""OpenCL devices: enumeration, the facts kept about each, and which device a name or option means."""

import dataclasses
import functools
import os
import re

from ..core import DeviceOption, DeviceType


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
    max_work_group_size : int
        Largest work-group the device accepts (0: not probed; kernels then
        ask the device).  Lowered by ``CAFFE2OP_OPENCL_LIMITS``.
    local_mem_bytes : int
        Local memory per work-group (0: not probed).  Lowered by
        ``CAFFE2OP_OPENCL_LIMITS``.
    int64_atomics : bool
        Whether the device reports ``cl_khr_int64_base_atomics``; no kernel
        needs them (the kernels use 32-bit atomics only).
    gpu_launch_shape : bool
        Whether kernels use the launch shapes made for GPUs (every device
        that is not a CPU; forced on any device by
        ``CAFFE2OP_OPENCL_LIMITS=shape=gpu``).
    emulated : str
        The ``CAFFE2OP_OPENCL_LIMITS`` value applied to this device, or ``""``.
    fast_fp64 : bool
        Whether double precision runs at a useful rate there (CPUs, and the
        data-centre GPUs listed in :func:`caffe2op.opencl.devices.fast_fp64`);
        on other devices float32 data is summed in compensated float instead
        of double.  Lowered by ``CAFFE2OP_OPENCL_LIMITS=fast_fp64=0``.
    long_vectors : int
        0, or the length from which Normalize along the last axis always
        splits a vector over many work-groups on GPU launch shapes
        (``CAFFE2OP_OPENCL_LIMITS=long_vectors=N``: the tests force that
        path with it; 0 keeps the device's own rule, which only changes
        speed, never bits).
    long_column_block : int
        0, or the rows per block of Normalize's long-column order when the
        tests lower it (``CAFFE2OP_OPENCL_LIMITS=long_column_block=B``, a
        multiple of 8; 0 keeps 4,096 rows, with the threshold at 16 blocks).

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
    max_work_group_size: int = 0
    local_mem_bytes: int = 0
    int64_atomics: bool = False
    gpu_launch_shape: bool = True
    emulated: str = ""
    fast_fp64: bool = False
    long_vectors: int = 0
    long_column_block: int = 0


_LIMIT_KEYS = (
    "work_group",
    "local_mem",
    "fp64",
    "fast_fp64",
    "int64_atomics",
    "shape",
    "long_vectors",
    "long_column_block",
)


def _parse_limits(text):
    """``CAFFE2OP_OPENCL_LIMITS``: ``key=value`` pairs separated by commas, as a dict.

    ``work_group=N`` caps the work-group size, ``local_mem=BYTES`` the local
    memory, ``fp64=0`` and ``int64_atomics=0`` report the extensions missing,
    ``fast_fp64=0`` reports double precision as slow (float32 data is then
    summed in compensated float), ``shape=gpu`` (or ``cpu``) forces the
    launch shapes, ``long_vectors=N`` splits Normalize's vectors of at least
    N elements over many work-groups on GPU launch shapes,
    ``long_column_block=B`` (tests only, a positive multiple of 8) the rows
    per block of Normalize's long-column order (and so its threshold, 16
    blocks).  A device limit is
    only ever lowered, never raised.  Emulates smaller GPUs on PoCL so that
    every fallback path runs in the normal tests.
    """
    limits = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in _LIMIT_KEYS:
            raise ValueError(f"caffe2op: CAFFE2OP_OPENCL_LIMITS: unknown key {key!r} (known: {', '.join(_LIMIT_KEYS)})")
        if key == "shape":
            if value not in ("gpu", "cpu"):
                raise ValueError(f"caffe2op: CAFFE2OP_OPENCL_LIMITS: shape must be 'gpu' or 'cpu', got {value!r}")
            limits[key] = value
        elif not value.isdigit() or (
            key in ("work_group", "local_mem", "long_vectors", "long_column_block") and int(value) < 1
        ):
            raise ValueError(f"caffe2op: CAFFE2OP_OPENCL_LIMITS: {key} needs a positive integer, got {value!r}")
        elif key == "long_column_block" and int(value) % 8:
            raise ValueError(f"caffe2op: CAFFE2OP_OPENCL_LIMITS: {key} needs a multiple of 8, got {value!r}")
        else:
            limits[key] = int(value)
    return limits


def _device_fp64(cl, device, extensions):
    """Whether ``device`` has double precision; never raises (older drivers reject the query without the extension)."""
    if "cl_khr_fp64" in extensions or "cl_amd_fp64" in extensions:
        return True
    try:
        return int(device.double_fp_config) != 0
    except (cl.Error, AttributeError, ValueError, TypeError):
        return False


# Device names (lower case) whose double precision runs at 1/2 or 1/3 of the
# single-precision rate.  Consumer and workstation GPUs run it at 1/16-1/64
# (or emulate it), where a compensated float sum is both faster and as
# accurate for a norm.  Names as the vendors' OpenCL drivers report them.
_FAST_FP64_GPU_NAMES = re.compile(
    r"\b("
    # NVIDIA data-centre parts (GP100, GV100, GA100, GH100, GB100/GB200)
    r"p100|gp100|v100|gv100|titan v|a100|a800|a30|h100|h200|h800|gh200|b100|b200|gb200"
    # AMD Instinct (CDNA), by marketing name and by gfx target
    r"|instinct|mi50|mi60|mi100|mi210|mi250x?|mi300[ax]?|gfx906|gfx908|gfx90a|gfx94[0-2]"
    # Intel Data Center GPU Max (Ponte Vecchio)
    r"|data center gpu max|ponte vecchio"
    r")\b"
)


def fast_fp64(name, is_cpu, fp64):
    """Whether double precision is fast enough on a device to sum float32 data in double.

    Parameters
    ----------
    name : str
        The device's name as its OpenCL driver reports it.
    is_cpu : bool
        Whether it is a CPU device (double precision is always full rate there).
    fp64 : bool
        Whether it has double precision at all.

    Returns
    -------
    bool
        True for CPU devices with fp64 and for the data-centre GPUs whose
        fp64 rate is 1/2 or 1/3 of fp32 (NVIDIA P100/V100/A100/H100/H200/B200,
        AMD Instinct, Intel Data Center GPU Max); False for every other
        device, including unknown ones (a compensated float sum is accurate
        everywhere, double is only fast on these).

    Examples
    --------
    >>> from caffe2op.opencl.devices import fast_fp64
    >>> fast_fp64("NVIDIA H100 80GB HBM3", False, True), fast_fp64("NVIDIA GeForce RTX 4090", False, True)
    (True, False)
    >>> fast_fp64("pthread-znver4-AMD EPYC", True, True), fast_fp64("gfx1100", False, True)
    (True, False)
    >>> fast_fp64("NVIDIA RTX A3000 Laptop GPU", False, True), fast_fp64("gfx90a:sramecc+:xnack-", False, True)
    (False, True)
    """
    if not fp64:
        return False
    if is_cpu:
        return True
    lowered = name.lower()
    return _FAST_FP64_GPU_NAMES.search(lowered) is not None


def _device_facts(cl, device, extensions):
    """(max work-group size, local memory bytes, CPU?) of ``device``, each falling back when a query fails."""
    facts = []
    for name, fallback in (("max_work_group_size", 1), ("local_mem_size", 0)):
        try:
            facts.append(int(getattr(device, name)))
        except (cl.Error, AttributeError, ValueError, TypeError):
            facts.append(fallback)
    try:
        facts.append(bool(device.type & cl.device_type.CPU))
    except (cl.Error, AttributeError, TypeError):
        facts.append(False)
    return tuple(facts)


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
    limits_text = os.environ.get("CAFFE2OP_OPENCL_LIMITS", "").strip()
    limits = _parse_limits(limits_text)
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
            max_group, local_mem, is_cpu = _device_facts(cl, device, extensions)
            has_fp64 = _device_fp64(cl, device, extensions) and limits.get("fp64", 1) != 0
            infos.append(
                OpenCLDeviceInfo(
                    index=len(infos),
                    cuda_index=cuda_count if is_nvidia else None,
                    platform=platform.name.strip(),
                    name=device.name.strip(),
                    vendor=device.vendor.strip(),
                    version=device.version.strip(),
                    driver_version=device.driver_version.strip(),
                    fp64=has_fp64,
                    fp16="cl_khr_fp16" in extensions,
                    global_mem_bytes=int(device.global_mem_size),
                    max_alloc_bytes=int(device.max_mem_alloc_size),
                    compute_units=int(device.max_compute_units),
                    max_work_group_size=min(max_group, limits.get("work_group", max_group)),
                    local_mem_bytes=min(local_mem, limits.get("local_mem", local_mem)),
                    int64_atomics="cl_khr_int64_base_atomics" in extensions and limits.get("int64_atomics", 1) != 0,
                    gpu_launch_shape=limits["shape"] == "gpu" if "shape" in limits else not is_cpu,
                    emulated=limits_text,
                    fast_fp64=fast_fp64(device.name, is_cpu, has_fp64) and limits.get("fast_fp64", 1) != 0,
                    long_vectors=limits.get("long_vectors", 0),
                    long_column_block=limits.get("long_column_block", 0),
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
            f"fp64 {('yes' if d.fast_fp64 else 'slow') if d.fp64 else 'no'}, fp16 {'yes' if d.fp16 else 'no'}; "
            f"float32 sums in {'double' if d.fast_fp64 else 'compensated float'}; "
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
        ``"cpu"`` (or ``"cpu:0"``), ``"opencl"`` (the :func:`default_device`), ``"opencl:N"``,
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
        If the string is not one of the forms above (``"cpu:1"`` included).
    RuntimeError
        For ``"opencl"`` when no OpenCL device exists.

    See Also
    --------
    caffe2op.devices.parse_device : the parser this calls.

    Examples
    --------
    >>> from caffe2op.opencl import resolve_device
    >>> resolve_device("cuda:1")
    DeviceOption(device_type=<DeviceType.CUDA: 1>, device_id=1)
    >>> resolve_device("cpu").device_type.name
    'CPU'
    """
    from ..devices import parse_device  # the one parser of device names

    return parse_device(device)


def _info_of_cl_device(device):
    _, devices, _, _ = _enumerate()
    infos = _enumerate()[0]
    for info, candidate in zip(infos, devices, strict=True):
        if candidate == device:
            return info
    raise RuntimeError(f"caffe2op: the OpenCL device {device.name!r} is not among opencl_devices()")
