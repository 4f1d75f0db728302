# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize on OpenCL devices (``opencl_kernels/sparse_normalize.cl``) and the operators for OPENCL and CUDA.

Precision per device (:func:`caffe2op.opencl.programs.accumulation` with
``half_in_float=True``): float64 tables sum in double; float32 tables sum
in double on devices whose double precision is fast (CPUs, data-centre
GPUs) and in compensated float elsewhere (consumer GPUs, or
``CAFFE2OP_OPENCL_LIMITS=fast_fp64=0``); float16 tables sum in float, as
Caffe2 and the CPU kernel.  On a "double" device a float32 result equals
the CPU kernel's (measured on PoCL: no element differed over rows of 3 to
1,024 elements; the summation orders differ, so a last-bit difference
remains possible).  On a "compensated" device the sum of squares is a
(hi, lo) float pair, the norm and the scale are float pairs too and each
element is scaled with one fma: measured on PoCL with ``fast_fp64=0``
against the default, one element in 3.1 million differed from a "double"
device's result, by 1 ulp (the norm argument is rounded to float32 there).

Every launch shape (the GPU team kernel at any work-group size, the serial
kernel of CPU devices, vector or scalar loads) sums a row in one canonical
order per accumulation mode, so a device gives the same bits whatever its
limits; see the kernel file's header.  Rows whose sum of squares overflows
or underflows are measured again with power-of-two scaling, as the CPU
kernel does.
"""

import numpy as np

from ... import _config, opencl
from ..._validation import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    index_vector,
    raise_first_bad_index,
    require_dtype,
    require_norm_fits,
)
from ...core import DeviceType
from ...devices import backend_for
from ...opencl.scratch import QueueScratch
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
# The team kernel covers every position in one pass up to this many groups.
_MAX_GROUPS = 1 << 20
_CPU_GROUPS_PER_COMPUTE_UNIT = 4
# Elements per lane (and per vector load) of the team kernel: a team of
# 64 / width lanes covers 64 elements of a row per stripe.
_LANE_WIDTH = {np.dtype(np.float16): 8, np.dtype(np.float32): 4, np.dtype(np.float64): 2}
_ELEMENTS_PER_STRIPE = 64
# False runs the GPU launch shape on CPU devices too (the tests use it to
# exercise the team kernel on PoCL).
_CPU_SHAPE_ON_CPU_DEVICES = True


def _team_shape(kernel, device, team, k, local_bytes_per_item):
    """(work-group size, number of work-groups) of the team kernel, or None when a team does not fit a group.

    Work-groups of up to 256 items, a multiple of the team size (16 lanes for
    float32, 8 for float16, 32 for float64), fewer under a lower work-group
    or local-memory cap; one team per position and enough groups to cover
    them all (up to 2^20 groups, which then loop).
    """
    cap = opencl.programs.work_group_cap(kernel, device, _MAX_WORK_GROUP, local_bytes_per_item)
    if cap < team:
        return None
    size = cap // team * team
    teams = size // team
    return size, min(-(-k // teams), _MAX_GROUPS)


def _serial_shape(device, k):
    """(1, number of work-groups) of the serial kernel: 4 one-item groups per core.

    On 2 PoCL cores this ran the benchmark's 1,000,000 x 64 case about 4x
    faster than 64-item groups, whose barriers PoCL turns into loops over the
    work items.
    """
    return 1, min(k, max(1, device.max_compute_units) * _CPU_GROUPS_PER_COMPUTE_UNIT)


# The hash set and winner flags of each command queue (status word + hash set as uint32, winner flags as uint8).
_SCRATCH = QueueScratch("slots", "winners")


def program_defines(op, table_dtype, index_dtype, info):
    """(-D definitions, accumulation mode) of the SparseNormalize program for these dtypes on ``info``.

    Also what ``.ci/gpu`` builds, so that it compiles exactly the variants
    the operator runs.
    """
    table_dtype = np.dtype(table_dtype)
    defines = opencl.dtype_defines(op, table_dtype, info)
    mode = opencl.programs.accumulation(table_dtype, info, half_in_float=True)
    acc = "double" if mode == "double" else "float"
    index_t = "int" if np.dtype(index_dtype) == np.int32 else "long"
    defines.update(INDEX_T=index_t, ACC=acc, C2O_V=_LANE_WIDTH[table_dtype])
    if mode == "double":
        defines["CAFFE2OP_FP64"] = 1
    if mode == "compensated":
        defines["C2O_COMPENSATED"] = 1
    if table_dtype == np.float64 or mode == "compensated":
        defines["C2O_RESCUE"] = 1  # sums that can overflow or underflow
    return defines, mode


def enqueue_sparse_normalize(op, queue, info, table, indices, use_max_norm, norm, *, check=True, events=None):
    """Normalise ``table[indices]`` in place on the device of ``queue``; return the last event.

    ``table`` is a C-contiguous device array (float16/32/64) and ``indices``
    a contiguous 1-D int32/int64 device array of the same context; their
    dtypes and the device's fp64 support must already be checked.  A first
    kernel bounds-checks the indices and claims each distinct row for one
    position; with ``check`` its status is read back and an IndexError is
    raised, the table untouched, if an index is out of range.  Without it
    the caller guarantees they are in range (they were checked on the
    host).  The 4-byte status is read without blocking the queue, and
    waited for (with the kernels before it) only just before returning;
    without ``check`` the call returns at once.  ``events``, a list,
    receives ``(step, event)`` pairs for profiling.
    """
    cl = opencl.require_pyopencl()
    k = int(indices.size)
    n_rows = int(table.shape[0])
    block = int(np.prod(table.shape[1:], dtype=np.int64))
    if k == 0:
        return None
    if k > _MAX_POSITIONS:
        raise ValueError(f"{op}: at most {_MAX_POSITIONS} indices per call on OpenCL, got {k}")
    defines, mode = program_defines(op, table.dtype, indices.dtype, info)
    program = opencl.get_program(queue.context, "sparse_normalize.cl", defines)
    acc_bytes = 8 if mode == "double" else 4
    norm_scalar = (np.float64 if mode == "double" else np.float32)(norm)

    hash_size = 64
    while hash_size < 2 * k:
        hash_size *= 2
    slot_bytes = 4 * (1 + hash_size)
    steps = events if events is not None else []
    table_offset = table.offset // table.dtype.itemsize
    index_offset = np.uint64(indices.offset // indices.dtype.itemsize)
    status = np.empty(1, np.uint32)
    with _SCRATCH.lock:
        scratch = _SCRATCH.entry(queue, slots=slot_bytes, winners=k)
        pending = list(table.events) + list(indices.events)
        if scratch.last_event is not None:
            pending.append(scratch.last_event)
        event = cl.enqueue_fill_buffer(queue, scratch.slots, np.uint32(_EMPTY_SLOT), 0, slot_bytes, wait_for=pending)
        steps.append(("clear", event))
        # Bounds check and claims in one pass over the indices (the check is
        # free there; its result is read back only when asked for).
        event = opencl.launch(
            queue,
            opencl.get_kernel(program, "caffe2op_sparse_normalize_check"),
            opencl.elementwise_size(queue, k),
            None,
            indices.base_data,
            index_offset,
            np.uint32(k),
            np.int64(n_rows),
            scratch.slots,
            np.uint32(hash_size - 1),
            scratch.winners,
            wait_for=[event],
        )
        steps.append(("check" if check else "claim", event))
        if block > 0 and n_rows > 0:
            args = (
                table.base_data,
                np.uint64(table_offset),
                np.uint64(block),
                indices.base_data,
                index_offset,
                np.uint32(k),
                scratch.slots,
                scratch.winners,
                np.int32(bool(use_max_norm)),
                norm_scalar,
            )
            width = _LANE_WIDTH[table.dtype]
            team = _ELEMENTS_PER_STRIPE // width
            shape = None
            if not _CPU_SHAPE_ON_CPU_DEVICES or opencl.programs.gpu_launch_shape(queue.device):
                kernel = opencl.get_kernel(program, "caffe2op_sparse_normalize_rows_fwd")
                local_per_item = acc_bytes * (2 if mode == "compensated" else 1)
                shape = _team_shape(kernel, queue.device, team, k, local_per_item)
            if shape is not None:
                wg, groups = shape
                vector_loads = block % width == 0 and table_offset % width == 0
                args += (np.int32(vector_loads), cl.LocalMemory(wg * local_per_item))
            else:  # CPU devices, and groups too small for a team
                kernel = opencl.get_kernel(program, "caffe2op_sparse_normalize_serial_fwd")
                wg, groups = _serial_shape(queue.device, k)
            event = opencl.launch(queue, kernel, (groups * wg,), (wg,), *args, wait_for=[event])
            table.add_event(event)
            steps.append(("normalize", event))
        if check:
            scratch.last_event = cl.enqueue_copy(queue, status, scratch.slots, wait_for=[event], is_blocking=False)
        else:
            scratch.last_event = event
        last = scratch.last_event
    if check:
        last.wait()  # outside the lock: other threads may enqueue meanwhile
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
    require_norm_fits(op, "param", norm, param.dtype)  # as on the host: a norm the table cannot hold is refused
    device_indices, check = _device_indices(op, backend, indices, param.shape[0])
    enqueue_sparse_normalize(op, queue, backend.info, param, device_indices, use_max_norm, norm, check=check)
    return param


def selected_rows(op, param, indices, use_max_norm, norm):
    """Check a NumPy table's call; return (its distinct selected rows ascending, use_max_norm, norm).

    The host-table paths move only these rows (empty when there is nothing
    to do).  ``np.unique`` makes a private sorted copy whose ends re-check
    the range, in case another thread changed the caller's indices after
    they were checked.
    """
    host_indices, use_max_norm, norm = check_sparse_normalize_args(op, param, indices, use_max_norm, norm)
    if host_indices.size == 0 or param.size == 0:
        return np.zeros(0, np.int64), use_max_norm, norm
    rows = np.unique(host_indices)
    if rows[0] < 0 or rows[-1] >= param.shape[0]:
        raise_first_bad_index(op, "indices", rows, param.shape[0])
    return rows, use_max_norm, norm


def _sparse_normalize_host_table(op, param, indices, use_max_norm, norm, backend):
    """``sparse_normalize(numpy_table, indices, device="opencl")``: only the selected rows travel.

    The distinct selected rows are gathered into a compact table, normalised
    on the device (each row of the compact table once, so duplicates need no
    claim) and written back, those rows only: a row the call does not select
    is never read or written, so concurrent calls on other rows of the same
    table lose no update, as on the CPU path.
    """
    rows, use_max_norm, norm = selected_rows(op, param, indices, use_max_norm, norm)
    opencl.dtype_defines(op, param.dtype, backend.info)  # TypeError: float64 without fp64
    if rows.size == 0:
        return param
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
