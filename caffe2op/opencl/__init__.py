# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL device layer: devices, contexts, programs and the OpenCL backend.

One module per job: :mod:`~caffe2op.opencl.devices` (which devices exist and
which one a name means), :mod:`~caffe2op.opencl.backend` (contexts, queues,
device blobs), :mod:`~caffe2op.opencl.programs` (building and launching
kernels) and :mod:`~caffe2op.opencl.sparse_matrix`; every public name is
imported here, and documented as ``caffe2op.opencl.NAME``.

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
    :mod:`importlib.resources`; a program's source is its ``.cl`` file with
    the headers it includes inlined (no ``-I`` path, which PoCL cannot take
    when it holds a space).  :func:`get_program` builds one program per
    (context, file, ``-D`` options) and keeps it; dtype variants are ``-D``
    options (:func:`dtype_defines`), never spliced source.  The options
    carry a hash of the kernel sources, so no disk or driver cache can
    return a binary of an older kernel.

Device limits
    ``CAFFE2OP_OPENCL_LIMITS`` (``work_group=N,local_mem=BYTES,fp64=0,
    int64_atomics=0,shape=gpu|cpu,long_vectors=N``) lowers what devices
    report when they are probed, so that a small GPU's fallback paths can
    run on PoCL, forces the GPU launch shapes (Oclgrind in CI runs with
    ``shape=gpu``) and Normalize's split of long vectors.

Fork
    A child made by ``os.fork()`` (multiprocessing's default start method on
    Linux) drops the contexts, queues and programs it inherited: they belong
    to driver threads that only exist in the parent.  If the parent had not
    yet probed the OpenCL devices, the child makes its own on first use.  If
    it had, no driver we know (PoCL, NVIDIA's) can start again in the child:
    the functional API's host-data calls then run in a helper process
    (:mod:`caffe2op.opencl.fork_proxy`), and anything needing a device object
    in the child raises a ``RuntimeError`` that says so, instead of waiting
    for ever; CPU operators work.  Use the ``spawn`` or ``forkserver`` start
    method for OpenCL workers that keep data on a device.
    An operator module adds a kernel with a ``.cl`` file and three calls::

        defines = opencl.dtype_defines("MyOp", x.dtype, backend.info)
        program = opencl.get_program(backend.context, "my_op.cl", defines)
        kernel = opencl.get_kernel(program, "caffe2op_my_op_fwd")
        size = opencl.elementwise_size(backend.queue, x.size)
        opencl.launch(backend.queue, kernel, size, None, out.base_data, x.base_data, np.uint64(x.size))
"""

from .backend import OpenCLBackend, backend_for, backend_of_array, copy_array, copy_columns
from .devices import (
    OpenCLDeviceInfo,
    default_device,
    describe_platforms,
    device_info,
    opencl_devices,
    require_pyopencl,
    resolve_device,
)
from .programs import (
    accumulation,  # noqa: F401  (for the operator modules, not public)
    c_type,
    dtype_defines,
    elementwise_size,
    get_kernel,
    get_program,
    kernel_dir,
    launch,
    program_source,
)
from .sparse_matrix import DeviceSparseMatrix

__all__ = [
    "DeviceSparseMatrix",
    "OpenCLBackend",
    "OpenCLDeviceInfo",
    "backend_for",
    "backend_of_array",
    "c_type",
    "copy_array",
    "copy_columns",
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
    "program_source",
    "require_pyopencl",
    "resolve_device",
]

# Documented, pickled and printed under the package name that users import them by.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith(__name__ + "."):
        _value.__module__ = __name__
del _name, _value
