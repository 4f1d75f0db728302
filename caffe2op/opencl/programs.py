# SPDX-License-Identifier: BSD-3-Clause
"""OpenCL programs and kernels: the kernel folder, ``-D`` dtype options, building once per context, launching."""

import functools
import hashlib
import importlib.resources
import os
import pathlib
import re
import threading
import weakref

import numpy as np

from .backend import _AFTER_FORK, _LOCK
from .devices import _info_of_cl_device, require_pyopencl

_PROGRAMS = weakref.WeakKeyDictionary()  # context -> {(file, options): program}
_KERNELS = weakref.WeakKeyDictionary()  # program -> {name: kernel}
_LAUNCH_LOCK = threading.Lock()


def _forget_programs(inherited):
    """Drop the programs and kernels (fork child, re-probe): their contexts are no longer used (see backend.py)."""
    inherited.append((list(_PROGRAMS.items()), list(_KERNELS.items())))
    _PROGRAMS.clear()
    _KERNELS.clear()


_AFTER_FORK.append(_forget_programs)
# Another thread of the parent may have held the lock while forking.
os.register_at_fork(after_in_child=_LAUNCH_LOCK._at_fork_reinit)

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


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/\\]+)"\s*$')


def program_source(filename):
    """The source of kernel file ``filename`` with its ``#include "..."`` headers inlined.

    Parameters
    ----------
    filename : str
        A file of :func:`kernel_dir`.

    Returns
    -------
    str
        One self-contained source: every header of the kernel folder it
        includes is inlined once (``#pragma once`` honoured), with ``#line``
        directives so that compiler messages name the original file and
        line.  No ``-I`` option is needed (PoCL rejects any include path
        with a space, quoted or not), and every driver cache keyed by the
        source sees a change to any header.

    Examples
    --------
    >>> from caffe2op.opencl.programs import program_source
    >>> source = program_source("sum.cl")
    >>> "#include" in source, '#line 1 "caffe2op_common.h"' in source
    (False, True)
    """
    return _program_source(filename)


@functools.cache
def _program_source(filename):
    included = set()
    lines = []

    def inline(name):
        if name in included:
            return
        included.add(name)
        path = kernel_dir() / name
        if not path.is_file():
            raise ValueError(f"caffe2op: no OpenCL kernel file {name!r} in {kernel_dir()}")
        lines.append(f'#line 1 "{name}"')
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = _INCLUDE.match(line)
            if match:
                inline(match.group(1))
                lines.append(f'#line {number + 1} "{name}"')
            elif line.strip() == "#pragma once":
                lines.append("")
            else:
                lines.append(line)

    inline(filename)
    return "\n".join(lines) + "\n"


@functools.cache
def _source_hash():
    """A hash of every kernel source and header, passed as ``-D CAFFE2OP_SOURCE_HASH``.

    The sources are inlined already; the hash also names the kernel version
    in the options, for drivers whose binary caches key on options alone.
    """
    digest = hashlib.sha256()
    for path in sorted(kernel_dir().iterdir()):
        if path.suffix in (".cl", ".h"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_options(defines=None):
    """The compiler options of a program: ``-D`` definitions, the source hash, correctly rounded sqrt.

    Parameters
    ----------
    defines : dict, optional
        ``{name: value}``, passed as ``-D name=value`` in sorted order.

    Returns
    -------
    list of str
        Options for ``pyopencl.Program.build``.  ``CAFFE2OP_SOURCE_HASH``
        changes whenever a kernel file does, so that no driver cache returns
        a stale binary.  Float square roots and divisions are correctly
        rounded (``-cl-fp32-correctly-rounded-divide-sqrt``), as on the CPU:
        OpenCL allows 3 ulp otherwise, and a row exactly at ``norm`` could be
        rescaled.  No ``-I``: see :func:`program_source`.

    Examples
    --------
    >>> from caffe2op.opencl.programs import build_options
    >>> options = build_options({"REAL": "float"})
    >>> options[:2], options[3].startswith("CAFFE2OP_SOURCE_HASH=")
    (['-D', 'REAL=float'], True)
    >>> "-cl-fp32-correctly-rounded-divide-sqrt" in options, "-I" in options
    (True, False)
    """
    options = []
    for name, value in sorted((defines or {}).items()):
        options += ["-D", f"{name}={value}"]
    options += ["-D", f"CAFFE2OP_SOURCE_HASH={_source_hash()}"]
    options += ["-cl-fp32-correctly-rounded-divide-sqrt"]
    return options


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

    The source handed to the compiler is the file with its headers inlined
    (:func:`program_source`), and the options (:func:`build_options`) carry
    a hash of every kernel file, so no disk or driver cache can return a
    binary of an older source.

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
    options = build_options(defines)
    key = (filename, tuple(options))
    with _LOCK:
        programs = _PROGRAMS.setdefault(context, {})
        program = programs.get(key)
        if program is None:
            cl = require_pyopencl()
            program = cl.Program(context, program_source(filename)).build(options=options)
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
    Add two device arrays with ``sum.cl``, as the Sum operator does:

    >>> import numpy as np, caffe2op
    >>> from caffe2op import opencl
    >>> backend = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0))  # doctest: +OPENCL
    >>> a = backend.from_host(np.arange(4, dtype=np.float32))  # doctest: +OPENCL
    >>> out = backend.empty((4,), np.float32)  # doctest: +OPENCL
    >>> program = opencl.get_program(backend.context, "sum.cl", {"REAL": "float"})  # doctest: +OPENCL
    >>> kernel = opencl.get_kernel(program, "caffe2op_sum_fwd")  # doctest: +OPENCL
    >>> size = opencl.elementwise_size(backend.queue, out.size)  # doctest: +OPENCL
    >>> event = opencl.launch(  # doctest: +OPENCL
    ...     backend.queue, kernel, size, None, out.base_data, a.base_data, a.base_data, np.uint64(out.size)
    ... )
    >>> out.add_event(event)  # doctest: +OPENCL
    >>> backend.to_host(out)  # doctest: +OPENCL
    array([0., 2., 4., 6.], dtype=float32)
    """
    cl = require_pyopencl()
    with _LAUNCH_LOCK:
        kernel.set_args(*args)
        return cl.enqueue_nd_range_kernel(queue, kernel, global_size, local_size, wait_for=wait_for or None)


def accumulation(dtype, info, *, half_in_float=False):
    """How a kernel reducing ``dtype`` data on the device ``info`` sums: ``"double"``, ``"compensated"`` or ``"float"``.

    Parameters
    ----------
    dtype : numpy.dtype
        float16, float32 or float64.
    info : OpenCLDeviceInfo
        The device (``fp64`` and ``fast_fp64`` decide).
    half_in_float : bool, optional
        Sum float16 data in plain float, as Caffe2's Float16SparseNormalize
        and the CPU SparseNormalize kernel do (rows are short there).
        Otherwise float16 is summed like float32, as the CPU Normalize kernel
        sums it in double (vectors can be millions long).

    Returns
    -------
    str
        ``"double"``: float64 data always, and float32/float16 data on
        devices whose double precision is fast (:attr:`OpenCLDeviceInfo.fast_fp64`:
        CPUs and data-centre GPUs) -- the CPU kernels' precision.
        ``"compensated"``: float32/float16 data elsewhere (consumer GPUs run
        double at 1/16-1/64 of the float rate, or lack it): the squares are
        summed in float with the rounding error of every square and every
        addition carried in a second float (build option
        ``C2O_COMPENSATED=1``), about as accurate as double for a norm.
        ``"float"``: float16 data with ``half_in_float``.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.opencl.devices import OpenCLDeviceInfo
    >>> from caffe2op.opencl.programs import accumulation
    >>> gpu = OpenCLDeviceInfo(
    ...     0, 0, "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", "NVIDIA", "OpenCL 3.0", "", True, False, 1, 1, 128
    ... )
    >>> accumulation(np.dtype(np.float32), gpu), accumulation(np.dtype(np.float64), gpu)
    ('compensated', 'double')
    >>> accumulation(np.dtype(np.float16), gpu, half_in_float=True)
    'float'
    """
    if dtype == np.float64:
        return "double"
    if dtype == np.float16 and half_in_float:
        return "float"
    return "double" if info.fast_fp64 else "compensated"


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
        ``(size,)``, a multiple of 256 covering ``min(n, 1024 * compute
        units)``, or None when ``n`` is 0.  Kernels loop with
        ``C2O_FOR_EACH``, which skips the items past ``n``.

    Examples
    --------
    >>> import caffe2op
    >>> from caffe2op import opencl
    >>> queue = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)).queue  # doctest: +OPENCL
    >>> opencl.elementwise_size(queue, 10), opencl.elementwise_size(queue, 0)  # doctest: +OPENCL
    ((256,), None)
    >>> opencl.elementwise_size(queue, 10**12)[0] <= 1024 * queue.device.max_compute_units  # doctest: +OPENCL
    True
    """
    if n == 0:
        return None
    cap = max(1, queue.device.max_compute_units) * 1024
    # A multiple of 256: the driver picks the work-group size, and a prime
    # global size would leave it work-groups of one item.
    return (int(-(-min(n, cap) // _ELEMENTWISE_ROUND) * _ELEMENTWISE_ROUND),)


_ELEMENTWISE_ROUND = 256


def gpu_launch_shape(device):
    """Whether kernels on ``device`` (a ``pyopencl.Device``) use the launch shapes made for GPUs.

    True for every device that is not a CPU, and for any device when
    ``CAFFE2OP_OPENCL_LIMITS`` holds ``shape=gpu`` (Oclgrind and the tests
    run the GPU shapes on PoCL that way).
    """
    return _info_of_cl_device(device).gpu_launch_shape


def work_group_cap(kernel, device, wanted, local_bytes_per_item=0):
    """The largest work-group size (not above ``wanted``) ``kernel`` may use on ``device``.

    Honours the device's and the kernel's limits, the local memory a
    work-group of that size needs (``local_bytes_per_item`` per item, plus
    the kernel's own static local memory), and the lower limits of
    ``CAFFE2OP_OPENCL_LIMITS``.  Always at least 1.
    """
    cl = require_pyopencl()
    info = _info_of_cl_device(device)
    cap = min(
        wanted,
        info.max_work_group_size or device.max_work_group_size,
        kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device),
    )
    if local_bytes_per_item and info.local_mem_bytes:
        static = int(kernel.get_work_group_info(cl.kernel_work_group_info.LOCAL_MEM_SIZE, device))
        cap = min(cap, (info.local_mem_bytes - static) // local_bytes_per_item)
    return max(1, int(cap))
