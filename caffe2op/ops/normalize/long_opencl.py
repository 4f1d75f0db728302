# SPDX-License-Identifier: BSD-3-Clause
"""Launch of Normalize's split kernels for a few very long vectors (``opencl_kernels/normalize_long.cl``).

Along the last axis, each vector is reduced by 2,048 work items (one per
chain of the canonical order) spread over many work-groups, then by a team
per vector, then scaled grid-wide: three launches that give the team
kernels' bits (the kernel file's header).  Only GPU launch shapes use it,
when the team launch would leave the device mostly idle (:func:`use_split`).
"""

import numpy as np

from ... import opencl
from ...opencl.scratch import QueueScratch

# Chains of the canonical order per vector (C2O_CHAINS: 256 slots x 8 lanes).
_CHAINS = 2048
_WORK_GROUP = 256
# Split vectors of at least this many elements (1 MB of float32): one SM streams ~80 GB/s, so a
# team on such a vector takes >= ~12 us, more than the two extra launches (~5 us each) cost.
_MIN_SPLIT_LENGTH = 1 << 18
# ... when the team launch (one 256-item work-group per long vector) would fill fewer than this
# many work-groups per compute unit: with more vectors the team kernel already fills the device.
_TEAM_GROUPS_PER_COMPUTE_UNIT = 2
# Never more vectors than this (the scratch buffer holds 2,048 chains per vector, up to 32 KB).
_MAX_SPLIT_VECTORS = 1024
# Launch 3: about this many work-groups per compute unit (several resident: loads in flight).
_APPLY_GROUPS_PER_COMPUTE_UNIT = 16
_APPLY_UNROLL = 4  # C2O_APPLY_UNROLL


def use_split(info, n, n_vectors):
    """Whether ``n_vectors`` vectors of ``n`` elements along the last axis run the split launches.

    Called for GPU launch shapes only (CPU devices keep the team kernel).
    ``info.long_vectors`` (``CAFFE2OP_OPENCL_LIMITS=long_vectors=N``) forces
    it from N elements on; otherwise vectors of at least 2^18 elements split
    when the team launch would run fewer than 2 work-groups per compute unit.
    Either way the results are the same bits.
    """
    if n_vectors > _MAX_SPLIT_VECTORS:
        return False
    if info.long_vectors:
        return n >= info.long_vectors
    return n >= _MIN_SPLIT_LENGTH and n_vectors < _TEAM_GROUPS_PER_COMPUTE_UNIT * max(1, info.compute_units)


# One growing buffer per command queue: the chains, then the factors.
_SCRATCH = QueueScratch("buffer")


def _pow2_at_most(value):
    return 1 << (max(1, int(value)).bit_length() - 1)


def _factors_kernel(program_for, device, name):
    """``(program, kernel, acc, local bytes per item, team)`` of launch 2.

    A team of P items (a power of two, at most 256, under the kernel's and
    the device's caps) per vector, each holding 256 / P slots
    (``C2O_ITEM_SLOTS``); the program is rebuilt for a smaller P if the
    kernel's own cap is lower.
    """
    team = _WORK_GROUP
    while True:
        program, acc, local_bytes = program_for(_WORK_GROUP // team, team == 1)
        kernel = opencl.get_kernel(program, name)
        cap = _pow2_at_most(opencl.programs.work_group_cap(kernel, device, team, local_bytes if team > 1 else 0))
        if cap >= team:
            return program, kernel, acc, local_bytes, team
        team = cap


def enqueue_long(queue, program_for, arrays, out, n_vectors, n, rule, *, in_place):
    """Launch the split forward (``rule`` given, ``arrays == [x]``) or backward (``[x, dy]``) Normalize.

    Everything is checked already and ``out`` overlaps no input unless it is
    the same array (``in_place``: forward ``out is x``; backward ``out`` may
    be ``x`` or ``dy``).  ``program_for(item_slots, solo)`` returns
    ``(program, ACC numpy type, local bytes per work item)`` of
    ``normalize_long.cl`` built for the arrays' dtype.  The arrays are seen
    as ``n_vectors`` vectors of ``n`` elements.  Returns the last event.
    """
    cl = opencl.require_pyopencl()
    device = queue.device
    units = max(1, device.max_compute_units)
    forward = rule is not None
    direction = "fwd" if forward else "bwd"
    program, factors_kernel, acc, local_bytes, team = _factors_kernel(
        program_for, device, f"caffe2op_normalize_long_factors_{direction}"
    )
    chains_kernel = opencl.get_kernel(program, f"caffe2op_normalize_long_chains_{direction}")
    apply_kernel = opencl.get_kernel(program, f"caffe2op_normalize_long_apply_{direction}")
    acc_bytes = np.dtype(acc).itemsize
    pair = 2 if local_bytes == 16 * acc_bytes else 1  # compensated (8 (hi, lo) lanes per item): pairs of chains
    sums = 1 if forward else 2
    chain_values = n_vectors * _CHAINS * pair * sums
    factor_values = n_vectors * (1 if forward else 4)
    inputs = []
    for a in arrays:
        inputs += [a.base_data, np.uint64(a.offset // a.dtype.itemsize)]
    output = [out.base_data, np.uint64(out.offset // out.dtype.itemsize)]
    shape = [np.uint64(n_vectors), np.uint64(n)]
    rule_args = []
    if forward:
        use_max_norm, norm = rule
        rule_args = [np.int32(use_max_norm), acc(norm)]

    chains_wg = _pow2_at_most(opencl.programs.work_group_cap(chains_kernel, device, _WORK_GROUP))
    chains_size = ((n_vectors * _CHAINS + chains_wg - 1) // chains_wg * chains_wg,), (chains_wg,)
    apply_wg = opencl.programs.work_group_cap(apply_kernel, device, _WORK_GROUP)
    # Enough work-groups per vector to give every compute unit several, each item several elements.
    wanted = -(-units * _APPLY_GROUPS_PER_COMPUTE_UNIT // n_vectors)
    per_vector = max(1, min(-(-n // (apply_wg * _APPLY_UNROLL)), wanted))
    apply_size = (per_vector * apply_wg, n_vectors), (apply_wg, 1)
    factors_offset = np.uint64(chain_values)

    with _SCRATCH.lock:
        scratch = _SCRATCH.entry(queue, buffer=(chain_values + factor_values) * acc_bytes)
        pending = [e for a in [*arrays, out] for e in a.events]
        if scratch.last_event is not None:
            pending.append(scratch.last_event)
        buffer = scratch.buffer
        first = opencl.launch(queue, chains_kernel, *chains_size, *inputs, *shape, buffer, wait_for=pending)
        second = opencl.launch(
            queue, factors_kernel, (n_vectors * team,), (team,), *inputs, *shape, buffer, buffer, factors_offset,
            *rule_args, np.uint32(team), cl.LocalMemory(team * local_bytes if team > 1 else acc_bytes),
            wait_for=[first],
        )  # fmt: skip
        extra = [np.int32(in_place)] if forward else []
        third = opencl.launch(
            queue, apply_kernel, *apply_size, *inputs, *output, *shape, buffer, factors_offset, *extra,
            wait_for=[second],
        )  # fmt: skip
        scratch.last_event = third
    for event in (first, second, third):
        out.add_event(event)
    return third
