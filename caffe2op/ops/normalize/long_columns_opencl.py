# SPDX-License-Identifier: BSD-3-Clause
"""Launch of Normalize's long-columns kernels (``opencl_kernels/normalize_long_columns.cl``).

Columns longer than :func:`long_column_threshold` rows (every axis but the
last) are summed in blocks of rows on many work-groups and reduced in a
second deterministic pass; the kernel file's header has the canonical order
and the performance model.  Every device and launch shape takes this path
for those columns, so their bits never depend on the device's limits.
"""

import numpy as np

from ... import opencl
from ...opencl.scratch import QueueScratch

# Rows per block of the canonical order (a multiple of 8); a column takes the long path when it
# has more than LONG_COLUMN_BLOCKS blocks' worth of rows (65,536).
LONG_COLUMN_BLOCK = 4096
LONG_COLUMN_BLOCKS = 16
_GPU_GROUP = 256
_CPU_GROUP = 64
_REDUCE_GROUP_GPU = 256
_REDUCE_GROUP_CPU = 8
_MAX_GROUPS = 1 << 20
_GPU_ITEMS_PER_COMPUTE_UNIT = 2048
_GPU_ROWS_PER_ITEM = 16
_CPU_GROUPS_PER_COMPUTE_UNIT = 4
_CPU_ITEMS_PER_GROUP = 4


def long_column_block(info):
    """Rows per block of the long-column order on the device ``info``: 4,096.

    The test-only ``CAFFE2OP_OPENCL_LIMITS=long_column_block=B`` lowers it
    (with the threshold, 16 blocks), so that Oclgrind can run the long path on
    small arrays; the order stays a function of the column length.
    """
    return info.long_column_block or LONG_COLUMN_BLOCK


def long_column_threshold(info):
    """Columns of more rows than this (65,536) take the long path on the device ``info``."""
    return LONG_COLUMN_BLOCKS * long_column_block(info)


# One growing buffer per command queue: the partials, then per-column scales or factors.
_SCRATCH = QueueScratch("buffer")


def _pow2_at_most(value):
    return 1 << (max(1, int(value)).bit_length() - 1)


def _pow2_at_least(value):
    return 1 << max(0, int(value) - 1).bit_length()


def _program(dtype, info, context):
    # Imported here: dense_opencl imports this module (through columns_opencl) for its launches.
    from .dense_opencl import program_defines

    defines, mode = program_defines("Normalize", dtype, info)
    return opencl.get_program(context, "normalize_long_columns.cl", defines), mode


def _scale_launch(kernel, device, n, inner):
    """(global, local) 2-D sizes of pass 3 on GPUs: columns x row-slices, ~2,048 items per compute unit."""
    units = max(1, device.max_compute_units)
    cap = _pow2_at_most(opencl.programs.work_group_cap(kernel, device, _GPU_GROUP))
    local0 = min(cap, _pow2_at_least(inner))
    local1 = max(1, cap // local0)
    groups0 = -(-inner // local0)
    wanted = -(-units * _GPU_ITEMS_PER_COMPUTE_UNIT // (groups0 * local0 * local1))
    groups1 = max(1, min(-(-n // (_GPU_ROWS_PER_ITEM * local1)), wanted, _MAX_GROUPS))
    return (groups0 * local0, groups1 * local1), (local0, local1)


def _rows_launch(kernel, device, outer, n):
    """(span, global, local) of pass 3 on CPU devices: a work item per run of ``span`` rows, several per core."""
    units = max(1, device.max_compute_units)
    runs_wanted = max(1, -(-units * _CPU_GROUPS_PER_COMPUTE_UNIT * _CPU_ITEMS_PER_GROUP // outer))
    span = max(1, -(-n // runs_wanted))
    items = outer * -(-n // span)
    local = max(1, min(opencl.programs.work_group_cap(kernel, device, _CPU_ITEMS_PER_GROUP), items // units))
    return span, (-(-items // local) * local,), (local,)


def enqueue_long_columns(queue, arrays, out, shape3, rule, *, on_cpu, in_place, info):
    """Launch the three passes of the forward (``rule`` given, ``[x]``) or backward (``rule`` None, ``[x, dy]``).

    Same contract as :func:`~caffe2op.ops.normalize.columns_opencl.enqueue_columns`
    (everything checked, ``out`` overlaps no input unless it is ``x`` and
    ``in_place``); ``shape3`` is ``(outer, n, inner)`` with ``n`` above
    :func:`long_column_threshold`.  Returns the last pass's event; the
    three passes' events are added to ``out`` in order.
    """
    outer, n, inner = shape3
    forward = rule is not None
    device = queue.device
    x = arrays[0]
    program, mode = _program(x.dtype, info, queue.context)
    acc = np.float64 if mode == "double" else np.float32
    acc_bytes = np.dtype(acc).itemsize
    block = long_column_block(info)
    nb = -(-n // block)
    count = outer * nb * 8 * inner
    parts = (2 if mode == "compensated" else 1) * (1 if forward else 2)
    columns = outer * inner
    per_column = 1 if forward else 4
    offsets = [np.uint64(a.offset // a.dtype.itemsize) for a in [*arrays, out]]
    u64 = np.uint64
    with _SCRATCH.lock:
        entry = _SCRATCH.entry(queue, buffer=(parts * count + per_column * columns) * acc_bytes)
        scratch = entry.buffer
        pending = [e for a in [*arrays, out] for e in a.events]
        if entry.last_event is not None:
            pending.append(entry.last_event)
        # Pass 1: the blocks' partials.
        direction = "fwd" if forward else "bwd"
        sums = opencl.get_kernel(program, f"caffe2op_normalize_long_columns_sums_{direction}")
        local = _pow2_at_most(opencl.programs.work_group_cap(sums, device, _CPU_GROUP if on_cpu else _GPU_GROUP))
        inputs = [v for a, off in zip(arrays, offsets, strict=False) for v in (a.base_data, off)]
        events = []
        event = opencl.launch(
            queue, sums, (-(-count // local) * local,), (local,),
            *inputs, scratch, u64(count), u64(n), u64(inner), u64(block), wait_for=pending,
        )  # fmt: skip
        events.append(event)
        # Pass 2: a work-group per column reduces its blocks and takes its scale (factors).
        reduce = opencl.get_kernel(program, f"caffe2op_normalize_long_columns_reduce_{direction}")
        wanted = _REDUCE_GROUP_CPU if on_cpu else _REDUCE_GROUP_GPU
        local = _pow2_at_most(opencl.programs.work_group_cap(reduce, device, wanted))
        groups = min(columns, _MAX_GROUPS)
        if forward:
            use_max_norm, norm = rule
            args = [x.base_data, offsets[0], scratch, u64(count), u64(n), u64(inner), u64(outer), u64(block)]
            args += [np.int32(use_max_norm), acc(norm)]
        else:
            args = [x.base_data, offsets[0], arrays[1].base_data, offsets[1], scratch, u64(count)]
            args += [u64(n), u64(inner), u64(outer), u64(block)]
        event = opencl.launch(queue, reduce, (groups * local,), (local,), *args, wait_for=[event])
        events.append(event)
        # Pass 3: scale (forward) or dx (backward); CPU devices walk runs of rows in memory order.
        shape = "rows" if on_cpu else "scale"
        write = opencl.get_kernel(program, f"caffe2op_normalize_long_columns_{shape}_{direction}")
        buffers = [v for a, off in zip([*arrays, out], offsets, strict=True) for v in (a.base_data, off)]
        args = [*buffers, scratch, u64(parts * count), u64(n), u64(inner), u64(outer)]  # scales after the partials
        if on_cpu:
            span, global_size, local_size = _rows_launch(write, device, outer, n)
            args.append(u64(span))
        else:
            global_size, local_size = _scale_launch(write, device, n, inner)
        if forward:
            args.append(np.int32(in_place))
        event = opencl.launch(queue, write, global_size, local_size, *args, wait_for=[event])
        entry.last_event = event
    # All three on out (waiting for the last is enough; profiling sums them), the last one last.
    for e in [*events, event]:
        out.add_event(e)
    return event
