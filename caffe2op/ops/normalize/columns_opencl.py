# SPDX-License-Identifier: BSD-3-Clause
"""Launch of Normalize's columns kernels (``opencl_kernels/normalize_columns.cl``): every axis but the last.

Two launch shapes compute one canonical order (the kernel file's header):
CPU devices run a work item per strip of chunks of 8 adjacent columns
(``caffe2op_normalize_columns_fwd`` / ``_bwd``), GPUs a work-group per 2-D
tile of adjacent columns x row-slices (``caffe2op_normalize_columns_tile_fwd``
/ ``_bwd``).  Columns of more than
:func:`~caffe2op.ops.normalize.long_columns_opencl.long_column_threshold`
rows take the long-columns kernels instead (blocks of rows on many
work-groups, a second deterministic pass).
"""

import numpy as np

from ... import opencl
from .long_columns_opencl import enqueue_long_columns, long_column_threshold

# CPU devices: a work item takes up to this many chunks of 8 columns (C2O_COLUMN_STRIP, a build
# option: its 8 partials per chunk are a private array), aiming at _CPU_ITEMS_PER_COMPUTE_UNIT
# work items per core.
CPU_COLUMN_STRIP = 64
_CPU_ITEMS_PER_COMPUTE_UNIT = 4
_CPU_WORK_GROUP = 64
# GPUs: tiles of _TILE_WIDE adjacent columns when there are enough of them to fill the device
# (_WIDE_TILES_PER_COMPUTE_UNIT per compute unit), else _TILE_NARROW; _SLICES row-slices.
_TILE_WIDE = 64
_TILE_NARROW = 32
_WIDE_TILES_PER_COMPUTE_UNIT = 8
_SLICES = 8  # the canonical order's partials per column
_MAX_TILE_GROUPS = 1 << 20


def _strip_launch(kernel, device, outer, inner):
    """``(per_item, n_items, global size, local size)`` of the CPU shape.

    A work item takes ``per_item`` chunks of 8 adjacent columns (at most
    :data:`CPU_COLUMN_STRIP`), few enough that every core gets several work
    items; work-groups shrink until every core gets several of them.
    """
    chunks = -(-inner // 8)
    wanted = max(1, device.max_compute_units) * _CPU_ITEMS_PER_COMPUTE_UNIT
    per_item = int(min(CPU_COLUMN_STRIP, max(1, -(-(outer * chunks) // wanted)), chunks))
    n_items = outer * -(-chunks // per_item)
    local = opencl.programs.work_group_cap(kernel, device, _CPU_WORK_GROUP)
    local = max(1, min(local, n_items // wanted))
    return per_item, n_items, (-(-n_items // local) * local,), (local,)


def tile_shape(kernel, device, info, outer, inner, column_bytes):
    """``(tile, slices)`` of the GPU shape: tile columns x slices row-slices per work-group.

    ``tile`` is 64 with enough tiles to fill the device, else 32, never much
    wider than ``inner`` (a power of two); ``slices`` is 8 (a row-slice per
    partial).  Under a small work-group cap the slices shrink first (an item
    then adds several residues: the same order), then the tile; under little
    local memory (``column_bytes`` per column of the tile) the tile shrinks.
    """
    wide = outer * -(-inner // _TILE_WIDE) >= max(1, device.max_compute_units) * _WIDE_TILES_PER_COMPUTE_UNIT
    tile = _TILE_WIDE if wide else _TILE_NARROW
    tile = min(tile, 1 << max(0, int(inner - 1).bit_length()))
    cap = opencl.programs.work_group_cap(kernel, device, tile * _SLICES)
    slices = _SLICES
    while tile * slices > cap and slices > 1:
        slices //= 2
    while tile * slices > cap and tile > 1:
        tile //= 2
    if info.local_mem_bytes:
        cl = opencl.require_pyopencl()
        static = int(kernel.get_work_group_info(cl.kernel_work_group_info.LOCAL_MEM_SIZE, device))
        while tile > 1 and tile * column_bytes > info.local_mem_bytes - static:
            tile //= 2
    return tile, slices


def enqueue_columns(queue, program, acc, arrays, out, shape3, rule, *, on_cpu, in_place, info):
    """Launch the forward (``rule`` given, ``arrays == [x]``) or backward (``rule`` None, ``[x, dy]``) columns kernel.

    Everything is checked already and ``out`` overlaps no input unless it is
    ``x`` itself (``in_place``).  ``program`` is ``normalize_columns.cl`` built
    for the dtype, ``acc`` its accumulator's NumPy type, ``shape3`` the array
    seen as ``(outer, n, inner)`` around the axis (``inner > 1``), ``on_cpu``
    whether the CPU shape runs, ``info`` the device's
    :class:`~caffe2op.opencl.devices.OpenCLDeviceInfo`.  Returns the event.
    """
    outer, n, inner = shape3
    if n > long_column_threshold(info):  # on every device and launch shape: one order per n
        return enqueue_long_columns(queue, arrays, out, shape3, rule, on_cpu=on_cpu, in_place=in_place, info=info)
    cl = opencl.require_pyopencl()
    forward = rule is not None
    device = queue.device
    buffers = []
    for a in [*arrays, out]:
        buffers += [a.base_data, np.uint64(a.offset // a.dtype.itemsize)]
    extra = []
    if forward:
        use_max_norm, norm = rule
        extra = [np.int32(use_max_norm), acc(norm), np.int32(in_place)]
    direction = "fwd" if forward else "bwd"
    if on_cpu:
        kernel = opencl.get_kernel(program, f"caffe2op_normalize_columns_{direction}")
        per_item, n_items, global_size, local_size = _strip_launch(kernel, device, outer, inner)
        shape_args = [np.uint64(n_items), np.uint64(n), np.uint64(inner), np.uint32(per_item)]
    else:
        kernel = opencl.get_kernel(program, f"caffe2op_normalize_columns_tile_{direction}")
        # Local ACC per tile column: the partials (8, doubled for compensated pairs) and the scale;
        # twice as many of each backward (<x, x> and <x, dy>, two factors).
        compensated = opencl.programs.accumulation(np.dtype(arrays[0].dtype), info) == "compensated"
        parts = 8 * (2 if compensated else 1) + 1
        column_acc = parts * (1 if forward else 2)
        tile, slices = tile_shape(kernel, device, info, outer, inner, column_acc * np.dtype(acc).itemsize)
        n_tiles = outer * -(-inner // tile)
        groups = min(n_tiles, _MAX_TILE_GROUPS)
        global_size, local_size = (groups * tile * slices,), (tile * slices,)
        shape_args = [np.uint64(n_tiles), np.uint64(n), np.uint64(inner), np.uint32(tile), np.uint32(slices)]
        extra.append(cl.LocalMemory(tile * column_acc * np.dtype(acc).itemsize))
    pending = [e for a in [*arrays, out] for e in a.events]
    event = opencl.launch(queue, kernel, global_size, local_size, *buffers, *shape_args, *extra, wait_for=pending)
    out.add_event(event)
    return event
