# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and NormalizeGradient on dense device arrays (``opencl_kernels/normalize.cl``)."""

import numpy as np

from ... import opencl
from ..._validation import FLOAT_DTYPES, require_dtype
from . import long_opencl
from ._common import canonical_axis
from .columns_opencl import CPU_COLUMN_STRIP, enqueue_columns

# ------------------------------------------------------------------- OpenCL
#
# Kernels: opencl_kernels/normalize.cl (work-group per vector, sparse),
# normalize_columns.cl and normalize_long.cl (a few long vectors split over many
# work-groups, long_opencl.py); normalize_common.h describes the dense launch
# shapes, the sparse kernels and why results are deterministic.

_MAX_WORK_GROUP = 256
# Slots of the canonical reduction order (C2O_SLOTS in normalize.cl); work-groups never exceed it.
_SLOTS = 256
_COLUMN_WORK_GROUP = 64
_GROUPS_PER_COMPUTE_UNIT = 256
_CPU_ITEMS_PER_COMPUTE_UNIT = 4
# False runs the GPU launch shapes on CPU devices too (the tests use it to exercise
# the local-memory reductions on PoCL).
_CPU_SHAPE_ON_CPU_DEVICES = True


def program_defines(op, dtype, info, ptr_dtype=None, item_slots=1, column_strip=1, solo=False, aligned_vload=True):
    """(-D definitions, accumulation mode) of normalize.cl for ``dtype`` on the device ``info``.

    The accumulation is the device's (:func:`caffe2op.opencl.programs.accumulation`;
    float16 is summed like float32): double, or compensated float pairs.
    ``item_slots`` is how many of the canonical order's slots one work item
    holds (``C2O_ITEM_SLOTS``, see :func:`_team_shape`), ``solo`` whether
    teams are one work item (``C2O_SOLO``: no local memory, no barrier),
    ``aligned_vload`` whether vload8 is kept to vectors starting at a
    multiple of 8 elements (``C2O_ALIGNED_VLOAD``: GPUs; CPUs load any),
    ``column_strip`` the columns kernels' strip (1 on GPUs).  Also what
    ``.ci/gpu`` builds (with :data:`GPU_GROUP_VARIANTS`), so that it compiles
    the variants the operator runs.  TypeError for float64 without fp64.
    """
    defines = opencl.dtype_defines(op, dtype, info)
    mode = opencl.programs.accumulation(np.dtype(dtype), info)
    double = mode == "double"
    defines.update(ACC="double" if double else "float", PTR_T="int" if ptr_dtype == np.dtype(np.int32) else "long")
    defines["C2O_COLUMN_STRIP"] = int(column_strip)
    defines["C2O_ITEM_SLOTS"] = int(item_slots)
    defines["C2O_SOLO"] = int(bool(solo))
    defines["C2O_ALIGNED_VLOAD"] = int(bool(aligned_vload))
    if double:
        defines["CAFFE2OP_FP64"] = 1
    if mode == "compensated":
        defines["C2O_COMPENSATED"] = 1
    return defines, mode


def _opencl_program(op, backend, dtype, ptr_dtype=None, item_slots=1, filename="normalize.cl", solo=False):
    """(program, ACC numpy type, local-memory bytes per work item) of a Normalize kernel file for ``dtype``.

    ``filename`` is ``normalize.cl`` (the work-group and sparse kernels),
    ``normalize_columns.cl`` or ``normalize_long.cl`` (the split launches of
    a few long vectors); all are built with :func:`program_defines`.  The work-group kernels reduce 8
    lanes per item in local memory (twice that for compensated pairs).
    """
    device = backend.queue.device
    defines, mode = program_defines(
        op, dtype, backend.info, ptr_dtype, item_slots, _column_strip(device), solo, not _on_cpu_device(device)
    )
    acc = np.float64 if mode == "double" else np.float32
    local_bytes = 8 * np.dtype(acc).itemsize * (2 if mode == "compensated" else 1)
    return opencl.get_program(backend.context, filename, defines), acc, local_bytes


# Teams (normalize_common.h): a vector shorter than this runs on one work item
# (all its slots in registers); GPU work items hold at most _GPU_ITEM_SLOTS slots
# (8 ACC8 sums: 64 registers in float, 128 in double, unrolled).
_SOLO_BELOW = 64
_GPU_ITEM_SLOTS = 8
# (solo, item slots) of every team program a GPU launch shape may build (.ci/gpu builds them all).
GPU_GROUP_VARIANTS = tuple((solo, slots) for solo in (True, False) for slots in (1, 2, 4, 8))


def _pow2_at_least(value):
    return 1 << max(0, int(value) - 1).bit_length()


def _pow2_at_most(value):
    return 1 << (max(1, int(value)).bit_length() - 1)


def _team_shape(typical, longest, cap):
    """(team size P, item slots S) on GPU launch shapes, for work-groups of at most ``cap`` items.

    P covers the ``typical`` vector's chunks of 8 (1 under 64 elements: one
    work item per vector, no local memory); S covers the ``longest`` one's
    with P items (S P >= its non-empty slots, or S P = 256), at most
    ``_GPU_ITEM_SLOTS`` (P grows instead) unless the work-group cap forces more.
    """
    cap = _pow2_at_most(min(cap, _SLOTS))
    used = min(max(1, -(-int(longest) // 8)), _SLOTS)
    p = 1 if typical < _SOLO_BELOW else min(cap, _pow2_at_least(-(-int(typical) // 8)))
    while True:
        s = min(_SLOTS // p, _pow2_at_least(-(-used // p)))
        if s <= _GPU_ITEM_SLOTS or p >= cap:
            return p, s
        p *= 2


def _item_slots(longest):
    """Slots (``C2O_SLOTS`` in normalize.cl) one work item holds for vectors of up to ``longest`` elements (CPU shape).

    Rounded up to 1, 8, 32 or 256, so that few programs are built.
    """
    used = min(max(1, -(-int(longest) // 8)), _SLOTS)
    return next(size for size in (1, 8, 32, _SLOTS) if size >= used)


def _group_kernel(op, backend, device, dtype, name, typical, longest, n_vectors, ptr_dtype=None):
    """``(kernel, acc, local_bytes, wg, n_groups, team)`` of a team-per-vector kernel.

    ``typical`` sizes the teams, ``longest`` bounds every vector's length
    (:func:`_team_shape`); the program is built for the slots a work item
    must hold.  CPU devices run one work item per group and per vector.
    """
    if _on_cpu_device(device):
        program, acc, local_bytes = _opencl_program(op, backend, dtype, ptr_dtype, _item_slots(longest), solo=True)
        kernel = opencl.get_kernel(program, name)
        wg, n_groups = _group_launch(kernel, device, 1, n_vectors, local_bytes)
        return kernel, acc, local_bytes, wg, n_groups, 1
    cap = _SLOTS
    while True:  # a variant's own work-group cap may be lower: shrink (strictly; team 1 always fits) and rebuild
        team, slots = _team_shape(typical, longest, cap)
        program, acc, local_bytes = _opencl_program(op, backend, dtype, ptr_dtype, slots, solo=team == 1)
        kernel = opencl.get_kernel(program, name)
        wg, n_groups = _group_launch(kernel, device, team, n_vectors, 0 if team == 1 else local_bytes)
        if wg >= team:
            return kernel, acc, local_bytes, wg, n_groups, team
        cap = wg


def _column_strip(device):
    """Most chunks of 8 vectors per work item of the columns kernels (a build option)."""
    return CPU_COLUMN_STRIP if _on_cpu_device(device) else 1


def _on_cpu_device(device):
    return _CPU_SHAPE_ON_CPU_DEVICES and not opencl.programs.gpu_launch_shape(device)


def _group_launch(kernel, device, team, n_vectors, local_bytes_per_item=8):
    """(work-group size, number of work-groups) of a team-per-vector kernel with teams of ``team`` items.

    CPU devices (PoCL): one work item per group (its chunks of 8 become
    vector instructions; barriers would turn into loops over the items).
    GPUs: 256 items (or the kernel's cap, a power of two), 256 / team vectors at a time.
    """
    units = max(1, device.max_compute_units)
    if _on_cpu_device(device):
        return 1, int(min(n_vectors, units * _GROUPS_PER_COMPUTE_UNIT, 1 << 20))
    cap = opencl.programs.work_group_cap(kernel, device, _MAX_WORK_GROUP, local_bytes_per_item)
    size = _pow2_at_most(cap)
    teams = max(1, size // team)
    groups = int(min(-(-n_vectors // teams), units * _GROUPS_PER_COMPUTE_UNIT, 1 << 20))
    return size, max(1, groups)


def _item_launch(kernel, device, n_items):
    """(global size, local size) of a work-item-per-vector kernel (the kernel skips the padding).

    On CPU devices a work-group runs on one core, so groups shrink until
    every core gets several of them.
    """
    local = opencl.programs.work_group_cap(kernel, device, _COLUMN_WORK_GROUP)
    if _on_cpu_device(device):
        local = max(1, min(local, n_items // (max(1, device.max_compute_units) * _CPU_ITEMS_PER_COMPUTE_UNIT)))
    return ((n_items + local - 1) // local * local,), (local,)


def _uses_groups(inner):
    """Whether a dense call runs the work-group-per-vector kernel (the last axis) or the columns kernel.

    The same choice on every device and launch shape: both kernels sum each
    vector in an order fixed by its length alone (normalize.cl), so the bits
    never depend on the device's limits or on the launch shape.
    """
    return inner == 1


def _element_offset(array):
    return np.uint64(array.offset // array.dtype.itemsize)


def _overlap(a, b):
    """'same' (one array), 'partial' (shared bytes, different views) or None, for two device arrays."""
    if a is b:
        return "same"
    if a.base_data is None or b.base_data is None or a.base_data != b.base_data:
        return None
    if a.offset == b.offset and a.nbytes == b.nbytes:
        return "same"
    if a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes:
        return "partial"
    return None


def _shape3(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return outer, int(shape[axis]), inner


def _enqueue_dense(op, queue, backend, arrays, out, axis, rule):
    """Launch the forward (``rule`` given, ``arrays == [x]``) or backward (``rule`` None, ``[x, dy]``) kernel.

    Everything is already checked.  ``out`` may be ``x`` (forward in place);
    an ``out`` that partially overlaps an input is written through a temporary.
    """
    cl = opencl.require_pyopencl()
    x = arrays[0]
    if any(_overlap(out, a) == "partial" for a in arrays):
        tmp = cl.array.empty(queue, out.shape, out.dtype)
        _enqueue_dense(op, queue, backend, arrays, tmp, axis, rule)
        return opencl.copy_array(queue, tmp, out)
    outer, n, inner = _shape3(x.shape, axis)
    device = queue.device
    if not _uses_groups(inner):
        program, acc, _ = _opencl_program(op, backend, x.dtype, filename="normalize_columns.cl")
        return enqueue_columns(
            queue, program, acc, arrays, out, (outer, n, inner), rule,
            on_cpu=_on_cpu_device(device), in_place=_overlap(out, x) == "same", info=backend.info,
        )  # fmt: skip
    forward = rule is not None
    if not _on_cpu_device(device) and long_opencl.use_split(backend.info, n, outer):

        def program_for(item_slots, solo):
            return _opencl_program(op, backend, x.dtype, item_slots=item_slots, filename="normalize_long.cl", solo=solo)

        in_place = _overlap(out, x) == "same"
        return long_opencl.enqueue_long(queue, program_for, arrays, out, outer, n, rule, in_place=in_place)
    name = f"caffe2op_normalize_{'fwd' if forward else 'bwd'}"
    buffers = []
    for a in arrays:
        buffers += [a.base_data, _element_offset(a)]
    buffers += [out.base_data, _element_offset(out)]
    kernel, acc, local_bytes, wg, n_groups, team = _group_kernel(
        op, backend, device, x.dtype, name, n, n, outer * inner
    )
    sizes = ((wg * n_groups,), (wg,))
    shape_args = [np.uint64(outer * inner), np.uint64(n)]
    extra = []
    if forward:
        use_max_norm, norm = rule
        extra = [np.int32(use_max_norm), acc(norm), np.int32(_overlap(out, x) == "same")]
    # Solo teams (one item per vector) touch no local memory.
    extra += [np.uint32(team), cl.LocalMemory((wg if team > 1 else 1) * local_bytes)]
    pending = [e for a in [*arrays, out] for e in a.events]
    event = opencl.launch(queue, kernel, *sizes, *buffers, *shape_args, *extra, wait_for=pending)
    out.add_event(event)
    return event


def _check_device_array(op, name, value, backend):
    """Raise unless ``value`` is a C-contiguous pyopencl array of ``backend``'s context."""
    cl = opencl.require_pyopencl()
    if not isinstance(value, cl.array.Array):
        raise TypeError(f"{op}: {name} must be a pyopencl.array.Array on {backend.name}, got {type(value).__name__}")
    if value.context != backend.context:
        raise ValueError(f"{op}: {name} lives on {opencl.backend_of_array(value).name}, not on {backend.name}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{op}: a device {name} must be C-contiguous")


def _check_device_out(op, x, out, backend):
    _check_device_array(op, "out", out, backend)
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out must have dtype {x.dtype} (that of the input), got {out.dtype}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{op}: out must have shape {tuple(x.shape)} (that of the input), got {tuple(out.shape)}")


def check_dense_opencl(op, x, axis, backend, name="X"):
    """Validate a device input of Normalize (called ``name`` in messages); return the axis in ``[0, x.ndim)``."""
    _check_device_array(op, name, x, backend)
    require_dtype(op, name, x, FLOAT_DTYPES)
    opencl.dtype_defines(op, x.dtype, backend.info)  # TypeError: float64 without fp64
    return canonical_axis(op, axis, x.ndim)


def normalize_opencl(op, x, axis, use_max_norm=False, norm=1.0, out=None, *, backend=None, queue=None, name="X"):
    """Validate, then normalise the device array ``x`` along ``axis`` into ``out`` (new if None); return ``out``.

    ``backend`` defaults to the array's own; ``queue`` to the array's queue,
    else the backend's.  ``out`` may be ``x`` (in place).  ``name`` is what
    error messages call ``x``.
    """
    backend = backend if backend is not None else opencl.backend_of_array(x)
    axis = check_dense_opencl(op, x, axis, backend, name)
    queue = queue if queue is not None else (x.queue if x.queue is not None else backend.queue)
    if out is None:
        out = opencl.require_pyopencl().array.empty(queue, x.shape, x.dtype)
    else:
        _check_device_out(op, x, out, backend)
    if x.size:
        _enqueue_dense(op, queue, backend, [x], out, axis, (use_max_norm, norm))
    return out


def check_gradient_opencl(op, x, dy, axis, backend):
    """Validate NormalizeGradient's device inputs; return the axis in ``[0, x.ndim)``."""
    axis = check_dense_opencl(op, x, axis, backend)
    _check_device_array(op, "dY", dy, backend)
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dY must have the dtype of X ({x.dtype}), got {dy.dtype}")
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"{op}: dY must have the shape of X {tuple(x.shape)}, got {tuple(dy.shape)}")
    return axis


def normalize_gradient_opencl(op, x, dy, axis, out=None, *, backend=None, queue=None):
    """Validate, then compute NormalizeGradient's ``dX`` on the device into ``out`` (new if None)."""
    backend = backend if backend is not None else opencl.backend_of_array(x)
    axis = check_gradient_opencl(op, x, dy, axis, backend)
    queue = queue if queue is not None else (x.queue if x.queue is not None else backend.queue)
    if out is None:
        out = opencl.require_pyopencl().array.empty(queue, x.shape, x.dtype)
    else:
        _check_device_out(op, x, out, backend)
    if x.size:
        _enqueue_dense(op, queue, backend, [x, dy], out, axis, None)
    return out
