# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize on OpenCL devices (``opencl_kernels/sparse_normalize.cl``) and the operators for OPENCL and CUDA."""

import numpy as np

from ... import _config, opencl
from ..._validation import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    index_vector,
    raise_first_bad_index,
    require_dtype,
)
from ...core import DeviceType
from ...devices import backend_for
from ...registry import Operator, register_cuda_operator, register_opencl_operator
from .cpu import _HALF, _RANGE_CHECKS, check_sparse_normalize_args, sparse_normalize_cpu
from .schema import FLOAT16_SPARSE_NORMALIZE_SCHEMA, SPARSE_NORMALIZE_SCHEMA

# --- OpenCL ------------------------------------------------------------------
#
# Kernels: opencl_kernels/sparse_normalize.cl (its header comment describes the
# launch protocol, the duplicate handling and the bounds check).

_EMPTY_SLOT = 0xFFFFFFFF
# Positions are uint32 in the kernel's hash set, whose size (a power of two
# >= 2 * positions) must fit its uint32 mask.
_MAX_POSITIONS = 2**31
_MAX_WORK_GROUP = 256
_GROUPS_PER_COMPUTE_UNIT = 256
_CPU_GROUPS_PER_COMPUTE_UNIT = 4
# False runs the GPU launch shape on CPU devices too (the tests use it to
# exercise the local-memory reduction on PoCL).
_CPU_SHAPE_ON_CPU_DEVICES = True


def _launch_shape(kernel, device, block, k, local_bytes_per_item):
    """(work-group size, number of work-groups) of the normalisation kernel.

    GPUs: a power of two >= ``block`` (one element per work item, capped by
    the device, the kernel and 256) and up to 256 groups per compute unit.
    CPU devices (PoCL): one work item per group and 4 groups per core, each
    looping over its share of the positions; on 2 cores this ran the
    benchmark's 1,000,000 x 64 case about 4x faster than 64-item groups,
    whose barriers PoCL turns into loops over the work items.
    """
    units = max(1, device.max_compute_units)
    if _CPU_SHAPE_ON_CPU_DEVICES and not opencl.programs.gpu_launch_shape(device):
        return 1, min(k, units * _CPU_GROUPS_PER_COMPUTE_UNIT)
    cap = opencl.programs.work_group_cap(kernel, device, _MAX_WORK_GROUP, local_bytes_per_item)
    size = 1
    while size < block and size * 2 <= cap:
        size *= 2
    return size, min(k, units * _GROUPS_PER_COMPUTE_UNIT, 1 << 16)


def enqueue_sparse_normalize(op, queue, info, table, indices, use_max_norm, norm, *, check=True, events=None):
    """Normalise ``table[indices]`` in place on the device of ``queue``; return the last event.

    ``table`` is a C-contiguous device array (float16/32/64) and ``indices``
    a contiguous 1-D int32/int64 device array of the same context; their
    dtypes and the device's fp64 support must already be checked.  With
    ``check`` the indices are bounds-checked on the device first (one extra
    kernel and a 4-byte read, which waits for the queue) and an IndexError is
    raised, the table untouched, if one is out of range.  Without it the
    caller guarantees they are in range (they were checked on the host).
    ``events``, a list, receives ``(step, event)`` pairs for profiling.
    """
    cl = opencl.require_pyopencl()
    k = int(indices.size)
    n_rows = int(table.shape[0])
    block = int(np.prod(table.shape[1:], dtype=np.int64))
    if k == 0:
        return None
    if k > _MAX_POSITIONS:
        raise ValueError(f"{op}: at most {_MAX_POSITIONS} indices per call on OpenCL, got {k}")
    context = queue.context
    defines = opencl.dtype_defines(op, table.dtype, info)
    double = opencl.accumulates_in_double(table.dtype, info)
    defines.update(INDEX_T="int" if indices.dtype == np.int32 else "long", ACC="double" if double else "float")
    if double:
        defines["CAFFE2OP_FP64"] = 1
    program = opencl.get_program(context, "sparse_normalize.cl", defines)

    hash_size = 64
    while hash_size < 2 * k:
        hash_size *= 2
    scratch = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4 * (1 + hash_size))
    pending = list(table.events) + list(indices.events)
    event = cl.enqueue_fill_buffer(queue, scratch, np.uint32(_EMPTY_SLOT), 0, 4 * (1 + hash_size), wait_for=pending)
    steps = events if events is not None else []
    steps.append(("clear", event))
    index_offset = np.uint64(indices.offset // indices.dtype.itemsize)
    if check:
        event = opencl.launch(
            queue,
            opencl.get_kernel(program, "caffe2op_sparse_normalize_check"),
            opencl.elementwise_size(queue, k),
            None,
            indices.base_data,
            index_offset,
            np.uint64(k),
            np.int64(n_rows),
            scratch,
            wait_for=[event],
        )
        steps.append(("check", event))
    if block > 0 and n_rows > 0:
        kernel = opencl.get_kernel(program, "caffe2op_sparse_normalize_fwd")
        wg, groups = _launch_shape(kernel, queue.device, block, k, 8 if double else 4)
        event = opencl.launch(
            queue,
            kernel,
            (groups * wg,),
            (wg,),
            table.base_data,
            np.uint64(table.offset // table.dtype.itemsize),
            np.uint64(block),
            indices.base_data,
            index_offset,
            np.uint32(k),
            scratch,
            np.uint32(hash_size - 1),
            np.int32(bool(use_max_norm)),
            (np.float64 if double else np.float32)(norm),
            cl.LocalMemory(wg * (8 if double else 4)),
            wait_for=[event],
        )
        table.add_event(event)
        steps.append(("normalize", event))
    if check:
        status = np.empty(1, np.uint32)
        cl.enqueue_copy(queue, status, scratch, wait_for=[event])
        if status[0] != _EMPTY_SLOT:
            raise_first_bad_index(op, "indices", indices.get(queue=queue), n_rows)
    return event


def _device_indices(op, backend, indices, n_rows):
    """Indices as a 1-D int32/int64 device array of ``backend``'s context, and whether they still need a check."""
    cl = opencl.require_pyopencl()
    if isinstance(indices, cl.array.Array):
        if indices.context != backend.context:
            other = opencl.backend_of_array(indices)
            raise ValueError(f"{op}: indices live on {other.name} but param lives on {backend.name}")
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{op}: indices must be integers (int32 or int64), got {indices.dtype}")
        if not indices.flags.c_contiguous:
            raise ValueError(f"{op}: device indices must be C-contiguous")
        if indices.dtype not in INDEX_DTYPES:
            indices = indices.astype(np.int64)
        return indices.reshape(-1), True
    # A private copy: the upload must send exactly what was checked, whatever
    # another thread does to the caller's array meanwhile.
    host = np.array(index_vector(op, "indices", indices), copy=True)
    if host.size and _RANGE_CHECKS[host.dtype](host, n_rows, _config.get_num_threads()):
        raise_first_bad_index(op, "indices", host, n_rows)
    return backend.from_host(host), False


def sparse_normalize_opencl(op, param, indices, use_max_norm, norm, *, float16_only=False, backend=None, queue=None):
    """Validate, then normalise the rows ``param[indices]`` of a device table in place; return ``param``.

    Everything is checked before any kernel runs (device indices by a bounds
    kernel that runs before the normalisation kernel may write).  ``backend``
    defaults to the array's own; ``queue`` to the array's queue, else the
    backend's.
    """
    cl = opencl.require_pyopencl()
    if not isinstance(param, cl.array.Array):
        raise TypeError(f"{op}: param must be a pyopencl.array.Array on the device, got {type(param).__name__}")
    require_dtype(op, "param", param, _HALF if float16_only else FLOAT_DTYPES)
    if param.ndim == 0:
        raise ValueError(f"{op}: param must have at least 1 dimension (rows), got a 0-d array")
    if not param.flags.c_contiguous:
        raise ValueError(f"{op}: a device param must be C-contiguous")
    backend = backend if backend is not None else opencl.backend_of_array(param)
    queue = queue if queue is not None else (param.queue if param.queue is not None else backend.queue)
    opencl.dtype_defines(op, param.dtype, backend.info)  # TypeError for float64 without fp64
    schema = FLOAT16_SPARSE_NORMALIZE_SCHEMA if float16_only else SPARSE_NORMALIZE_SCHEMA
    use_max_norm = schema.arg("use_max_norm").convert(op, use_max_norm)
    norm = schema.arg("norm").convert(op, norm)
    device_indices, check = _device_indices(op, backend, indices, param.shape[0])
    enqueue_sparse_normalize(op, queue, backend.info, param, device_indices, use_max_norm, norm, check=check)
    return param


def _sparse_normalize_host_table(op, param, indices, use_max_norm, norm, backend):
    """``sparse_normalize(numpy_table, indices, device="opencl")``: only the selected rows travel.

    The distinct selected rows are gathered into a compact table, normalised
    on the device (each row of the compact table once, so duplicates need no
    claim) and written back, those rows only: a row the call does not select
    is never read or written, so concurrent calls on other rows of the same
    table lose no update, as on the CPU path.
    """
    host_indices, use_max_norm, norm = check_sparse_normalize_args(op, param, indices, use_max_norm, norm)
    opencl.dtype_defines(op, param.dtype, backend.info)  # TypeError: float64 without fp64
    if host_indices.size == 0 or param.size == 0:
        return param
    # np.unique makes a private sorted copy; its ends re-check the range, in case
    # another thread changed the caller's indices after they were checked.
    rows = np.unique(host_indices)
    if rows[0] < 0 or rows[-1] >= param.shape[0]:
        raise_first_bad_index(op, "indices", rows, param.shape[0])
    compact = backend.from_host(param[rows])
    positions = backend.from_host(np.arange(rows.shape[0], dtype=np.int64 if rows.shape[0] > 2**31 - 1 else np.int32))
    enqueue_sparse_normalize(op, backend.queue, backend.info, compact, positions, use_max_norm, norm, check=False)
    param[rows] = backend.to_host(compact)
    return param


def _sparse_normalize_elsewhere(op, param, indices, use_max_norm, norm, device):
    """The functional form's non-default paths: a device ``param``, or ``device=``."""
    target = opencl.resolve_device(device)
    on_cpu = target is None or target.device_type == DeviceType.CPU
    if isinstance(param, np.ndarray):
        if on_cpu:
            return sparse_normalize_cpu(op, param, indices, use_max_norm, norm)
        return _sparse_normalize_host_table(op, param, indices, use_max_norm, norm, backend_for(target))
    backend = opencl.backend_of_array(param)
    if backend is None:
        return sparse_normalize_cpu(op, param, indices, use_max_norm, norm)  # raises the TypeError
    if target is not None and (on_cpu or backend_for(target).info.index != backend.info.index):
        raise ValueError(f"{op}: param lives on {backend.name} but device={device!r} was asked for")
    return sparse_normalize_opencl(op, param, indices, use_max_norm, norm, backend=backend)


@register_opencl_operator("SparseNormalize")
@register_cuda_operator("SparseNormalize")
class SparseNormalizeOpenCL(Operator):
    """SparseNormalize on an OpenCL device: bounds-check kernel, then one normalisation kernel."""

    float16_only = False

    def run_on_device(self):
        sparse_normalize_opencl(
            self.type,
            self.input(0),
            self.input(1),
            self.arg("use_max_norm"),
            self.arg("norm"),
            float16_only=self.float16_only,
            backend=self.backend,
            queue=self.backend.queue,
        )


@register_opencl_operator("Float16SparseNormalize")
@register_cuda_operator("Float16SparseNormalize")
class Float16SparseNormalizeOpenCL(SparseNormalizeOpenCL):
    """Float16SparseNormalize on an OpenCL device (vload_half/vstore_half, float arithmetic)."""

    float16_only = True
