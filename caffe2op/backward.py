# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's backward-pass builder: the gradient operators of a list of forward operators.

The algorithm is Caffe2's ``core.IR`` (``caffe2/python/core.py``):

1. **Play** the forward operators, giving every blob a version: an input is
   read at the blob's current version; an output that already exists (was
   read or written before) moves to the next version, a new one starts at 0.
   Every read of (blob, version) is recorded as a usage.  Then every
   ``StopGradient`` whose output no operator reads is rejected (the "orphan
   output" ``ValueError``), before the ``ys`` are looked at.
2. **Seed** the gradients of ``ys``: given names, or
   ``ConstantFill([y], [y + "_autogen_grad"], value=1.0)`` operators, which
   come first in the result.  Each ``y`` counts as one more usage of its
   last version.
3. **Walk the operators backwards.**  An operator none of whose outputs has
   a gradient is skipped (except ``ZeroGradient``, which has no outputs).
   Otherwise its gradient maker runs (:func:`caffe2op.get_gradient_defs`)
   and every input of every gradient operator is checked: an output
   gradient must belong to the version of the output this operator wrote,
   a forward input or output must still be at the version the operator
   saw, anything else must have been written by an earlier gradient operator
   of the same forward operator (``RuntimeError`` whose message names the
   blob and says "version" otherwise).  The input gradients are recorded;
   an input that is also an output (in place) has its gradient overwritten
   even by None, which is how an in-place ``StopGradient`` cuts off every
   earlier producer of the blob.
4. **Accumulate.**  When a (blob, version) is read by several operators
   and the walk reaches the first of them, and at least two gradients were
   produced for it: dense gradients are added with one ``Sum`` (the
   gradient operator of the last forward consumer keeps the plain
   ``X_grad`` name, the others are renamed ``_X_grad_autosplit_<k>``, k from
   0; pass-through gradients join as they are); sparse ones are
   concatenated with two ``Concat(axis=0)`` into ``X_grad_indices_concat``
   and ``X_grad_values_concat``.  Mixing sparse and dense, or gradient
   operators on different devices, raises ``RuntimeError``.

Every step is linear in the number of operators (and their inputs and
outputs).
"""

import collections
import dataclasses
import gc

from .core import CPU_DEVICE, OperatorDef, current_device_scope
from .gradient import GradientSlice, get_gradient_defs

__all__ = ["get_backward_pass"]


@dataclasses.dataclass
class _DenseGenerator:
    """One producer of a dense gradient: a gradient operator's output, or a pass-through name."""

    grad_op: object  # OperatorDef or None (pass-through)
    index: int
    gradient: str
    device_option: object  # of the gradient operator, or of the forward operator for a pass-through


@dataclasses.dataclass
class _SparseGenerator:
    """One producer of a sparse gradient; indices and values may come from operators or pass through."""

    op_indices: object
    index_indices: int
    op_values: object
    index_values: int
    gradient: GradientSlice
    device_option: object


def _device(device_option):
    """The effective device of a device option (None is the CPU)."""
    return CPU_DEVICE if device_option is None else device_option


def _device_name(device_option):
    d = _device(device_option)
    return f"{d.device_type.name}:{d.device_id}"


def _index_in_gradients(gradients, name):
    """Position of ``name`` in a gradient list (dense names or GradientSlice parts), or None."""
    for i, g in enumerate(gradients):
        if g is None:
            continue
        if isinstance(g, GradientSlice):
            if g.indices == name or g.values == name:
                return i
        elif g == name:
            return i
    return None


class _IR:
    """Blob versions along the forward operators and the gradient bookkeeping of Caffe2's ``IR``."""

    def __init__(self, ops):
        self.ssa = []  # per op: (op, in_versions, out_versions)
        self.input_usages = collections.defaultdict(lambda: collections.defaultdict(list))
        self.frontier = {}
        self.gradient_frontier = {}
        self.gradient_generators = collections.defaultdict(lambda: collections.defaultdict(list))
        self.out_version_history = collections.defaultdict(list)
        self.in_version_history = collections.defaultdict(list)
        for op in ops:
            self._play(op)
        self._sanity_check(ops)

    def _play(self, op):
        position = len(self.ssa)
        in_versions = {}
        for name in op.inputs:
            version = self.frontier.setdefault(name, 0)
            in_versions[name] = version
            self.input_usages[name][version].append(position)
            self.in_version_history[name].append((position, version))
        out_versions = {}
        for name in op.outputs:
            # A blob read or written before moves to its next version.
            if name in self.frontier:
                self.frontier[name] += 1
            else:
                self.frontier[name] = 0
            out_versions[name] = self.frontier[name]
            self.out_version_history[name].append((position, self.frontier[name]))
        self.ssa.append((op, in_versions, out_versions))

    def _sanity_check(self, ops):
        for op in ops:
            if op.type == "StopGradient" and op.outputs and op.outputs[0] not in self.input_usages:
                raise ValueError(
                    f"StopGradient's output {op.outputs[0]!r} is orphan: no operator reads it, so it stops "
                    f"nothing. You typically want the same input and output for StopGradient "
                    f"(StopGradient({op.inputs[0] if op.inputs else ''!r}) in place). Op: {op.describe()}"
                )

    # --- error help -----------------------------------------------------------

    def _history(self, name, outputs):
        entries = self.out_version_history[name] if outputs else self.in_version_history[name]
        kind = "out" if outputs else "in"
        lines = [f"== version history of blob {name!r} ({'written' if outputs else 'read'} by):"]
        lines += [f"  version ({kind}) {v} <- op {p}: {self.ssa[p][0].describe()}" for p, v in entries]
        return "\n".join(lines)

    def _check_gradient_op_input(self, name, g_output, fwd_idx, local_blobs):
        forward_op, in_versions, out_versions = self.ssa[fwd_idx]
        original = _index_in_gradients(g_output, name)
        if original is not None:
            out_name = forward_op.outputs[original]
            expected = out_versions[out_name]
            have = self.gradient_frontier.get(out_name)
            if expected != have:
                raise RuntimeError(
                    f"Gradient name {name!r} is expected to correspond to version {expected} of {out_name!r}, "
                    f"but currently we have version {have}. Maybe the same output blob is written by two "
                    f"operators?\n{self._history(out_name, True)}"
                )
        elif name in out_versions or name in in_versions:
            # A forward output (checked first, as in Caffe2) or input must still be at the version this
            # operator saw.
            is_output = name in out_versions
            needed = out_versions[name] if is_output else in_versions[name]
            if self.frontier[name] != needed:
                raise RuntimeError(
                    f"Gradient operator of {forward_op.describe()} needs {'output' if is_output else 'input'} "
                    f"{name!r} at version {needed}, but the forward pass leaves it at version "
                    f"{self.frontier[name]} (it is overwritten later).\n{self._history(name, is_output)}"
                )
        elif name not in local_blobs:
            raise RuntimeError(
                f"Blob {name!r} is not in the scope of operator {forward_op.describe()} and is not written "
                f"by any of its earlier gradient operators."
            )

    # --- generators -----------------------------------------------------------

    def _build_gradient_generators(self, fwd_idx, grad_ops, g_output, g_input):
        forward_op, in_versions, _ = self.ssa[fwd_idx]
        local_blobs = set()
        partial_sparse = collections.defaultdict(list)  # (input name, version) -> partial generators
        for grad_op in grad_ops:
            for name in grad_op.inputs:
                self._check_gradient_op_input(name, g_output, fwd_idx, local_blobs)
            local_blobs.update(grad_op.outputs)
            for i, output in enumerate(grad_op.outputs):
                input_index = _index_in_gradients(g_input, output)
                if input_index is None:
                    continue
                input_name = forward_op.inputs[input_index]
                version = in_versions[input_name]
                g = g_input[input_index]
                if isinstance(g, GradientSlice):
                    if g.indices == output:
                        meta = _SparseGenerator(grad_op, i, None, 0, g, grad_op.device_option)
                    else:
                        meta = _SparseGenerator(None, 0, grad_op, i, g, grad_op.device_option)
                    partial_sparse[input_name, version].append(meta)
                else:
                    self.gradient_generators[input_name][version].append(
                        _DenseGenerator(grad_op, i, g, grad_op.device_option)
                    )
        # Indices and values written by different operators make one generator.
        for (input_name, version), metas in partial_sparse.items():
            if len(metas) == 1:
                merged = metas[0]
            elif len(metas) == 2 and (metas[0].op_indices is None) != (metas[1].op_indices is None):
                first, second = metas
                if _device(first.device_option) != _device(second.device_option):
                    raise RuntimeError(
                        f"Gradients for {input_name!r}: the indices and values of its sparse gradient are made on "
                        f"different devices ({_device_name(first.device_option)} and "
                        f"{_device_name(second.device_option)})"
                    )
                merged = _SparseGenerator(
                    first.op_indices or second.op_indices,
                    first.index_indices + second.index_indices,
                    first.op_values or second.op_values,
                    first.index_values + second.index_values,
                    first.gradient,
                    first.device_option,
                )
            else:
                raise RuntimeError(
                    f"Gradients for {input_name!r}: the gradient operators of {forward_op.describe()} write its "
                    f"sparse gradient {metas[0].gradient} more than once"
                )
            self.gradient_generators[input_name][version].append(merged)
        # Gradients passed through from output gradients (no operator makes them), e.g. Sum's.
        for input_index, g in enumerate(g_input):
            if not g:
                continue
            input_name = forward_op.inputs[input_index]
            version = in_versions[input_name]
            if isinstance(g, GradientSlice):
                if g.indices not in local_blobs and g.values not in local_blobs:
                    self.gradient_generators[input_name][version].append(
                        _SparseGenerator(None, 0, None, 0, g, forward_op.device_option)
                    )
            elif g not in local_blobs:
                self.gradient_generators[input_name][version].append(
                    _DenseGenerator(None, 0, g, forward_op.device_option)
                )
        for input_index, g in enumerate(g_input):
            if g is not None:
                input_name = forward_op.inputs[input_index]
                self.gradient_frontier[input_name] = in_versions[input_name]

    # --- accumulation -----------------------------------------------------------

    @staticmethod
    def _sum_output_name(generators, input_name):
        for g in generators:
            if isinstance(g, _DenseGenerator):
                if g.grad_op is not None:
                    return g.grad_op.outputs[g.index]
            else:
                if g.op_indices is not None:
                    return g.op_indices.outputs[g.index_indices].removesuffix("_indices")
                if g.op_values is not None:
                    return g.op_values.outputs[g.index_values].removesuffix("_values")
        return input_name + "_grad"

    @staticmethod
    def _disambiguate(grad_op, index, count):
        grad_op.outputs[index] = f"_{grad_op.outputs[index]}_autosplit_{count}"
        return grad_op.outputs[index], count + 1

    @staticmethod
    def _check_conflict(base, name):
        if base == name:
            raise RuntimeError(
                f"The pass-through gradient {name!r} has the name the accumulated gradient would get; "
                f"cannot accumulate gradients into it"
            )

    def _dense_sum_ops(self, generators, base):
        inputs = []
        count = 0
        first_op = True
        for g in generators:
            if g.grad_op is not None:
                if first_op:
                    first_op = False
                    out = g.grad_op.outputs[g.index]
                else:
                    out, count = self._disambiguate(g.grad_op, g.index, count)
                inputs.append(out)
            else:
                self._check_conflict(base, g.gradient)
                inputs.append(g.gradient)
        if base in inputs:
            # Sum runs in place on input 0 only.
            k = inputs.index(base)
            inputs[0], inputs[k] = inputs[k], inputs[0]
        return [OperatorDef(type="Sum", inputs=inputs, outputs=[base])], base

    def _sparse_sum_ops(self, generators, base):
        indices, values = [], []
        count_i = count_v = 0
        for g in generators:
            if g.op_indices is not None:
                out, count_i = self._disambiguate(g.op_indices, g.index_indices, count_i)
                indices.append(out)
            else:
                self._check_conflict(base, g.gradient.indices)
                indices.append(g.gradient.indices)
            if g.op_values is not None:
                out, count_v = self._disambiguate(g.op_values, g.index_values, count_v)
                values.append(out)
            else:
                self._check_conflict(base, g.gradient.values)
                values.append(g.gradient.values)
        # No deduplication of indices: consumers (optimizers, SparseNormalize) handle repeats.
        ops = [
            OperatorDef(
                type="Concat",
                inputs=indices,
                outputs=[base + "_indices_concat", base + "_indices_concat_split"],
                args={"axis": 0},
            ),
            OperatorDef(
                type="Concat",
                inputs=values,
                outputs=[base + "_values_concat", base + "_values_concat_split"],
                args={"axis": 0},
            ),
        ]
        return ops, GradientSlice(base + "_indices_concat", base + "_values_concat")

    @staticmethod
    def _verify_generators(input_name, generators):
        """Whether the generators need accumulating; raise for mixes Caffe2 could not accumulate."""
        if len({type(g) for g in generators}) > 1:
            raise RuntimeError(
                f"Gradients for {input_name!r} failed to verify: automatic aggregation of a mix of sparse and "
                f"dense gradients is not supported"
            )
        if len(generators) < 2:
            return False
        devices = dict.fromkeys(_device(g.device_option) for g in generators)
        if len(devices) > 1:
            names = ", ".join(_device_name(d) for d in devices)
            raise RuntimeError(
                f"Gradients for {input_name!r} failed to verify: not all gradient operators have the same "
                f"device option ({names})"
            )
        return True

    def _accumulate(self, fwd_idx):
        forward_op, in_versions, _ = self.ssa[fwd_idx]
        sum_ops, grad_map = [], {}
        for input_name in dict.fromkeys(forward_op.inputs):
            version = in_versions[input_name]
            usage = self.input_usages[input_name][version]
            if len(usage) <= 1 or usage[0] != fwd_idx:
                continue
            generators = self.gradient_generators[input_name][version]
            if not self._verify_generators(input_name, generators):
                continue
            base = self._sum_output_name(generators, input_name)
            if isinstance(generators[0], _DenseGenerator):
                ops, g = self._dense_sum_ops(generators, base)
            else:
                ops, g = self._sparse_sum_ops(generators, base)
            # The first generator's device (all are equal, checked above).
            for op in ops:
                op.device_option = generators[0].device_option
            sum_ops.extend(ops)
            grad_map[input_name] = g
        return sum_ops, grad_map

    # --- the backward walk --------------------------------------------------------

    def _init_gradients(self, ys):
        all_grad, grad_ops = {}, []
        for y, g in ys.items():
            if g is None:
                autogen = OperatorDef(
                    type="ConstantFill",
                    inputs=[y],
                    outputs=[y + "_autogen_grad"],
                    args={"value": 1.0},
                    device_option=self._autogen_device(y),
                )
                grad_ops.append(autogen)
                g = autogen.outputs[0]
                # It can join a Sum like any gradient operator's output.
                self.gradient_generators[y][self.frontier[y]].append(
                    _DenseGenerator(autogen, 0, g, autogen.device_option)
                )
            all_grad[y] = g
        return all_grad, grad_ops

    def _autogen_device(self, y):
        """The current device scope (as Caffe2), else the device of the operator that last wrote ``y``."""
        scope = current_device_scope()
        if scope is not None:
            return scope
        history = self.out_version_history.get(y)
        return self.ssa[history[-1][0]][0].device_option if history else None

    def _gradients_of(self, fwd_idx, all_grad):
        forward_op = self.ssa[fwd_idx][0]
        g_output = [all_grad.get(name) for name in forward_op.outputs]
        # ZeroGradient has no outputs, yet its maker must run.
        if all(g is None for g in g_output) and forward_op.type != "ZeroGradient":
            return {}, []
        try:
            grad_ops, g_input = get_gradient_defs(forward_op, g_output)
        except Exception as err:
            _add_note(err, f"while creating the gradient of operator {fwd_idx}: {forward_op.describe()}")
            raise
        self._build_gradient_generators(fwd_idx, grad_ops, g_output, g_input)
        new_grad = {}
        for name, grad in zip(forward_op.inputs, g_input, strict=True):
            # None never hides a gradient found earlier, except for an input that is also an
            # output: before this operator the blob was another version (in place).
            if grad is not None or name not in all_grad or name in forward_op.outputs:
                new_grad[name] = grad
        return new_grad, grad_ops

    def backward(self, ys):
        for y in ys:
            version = self.frontier.setdefault(y, 0)
            self.gradient_frontier[y] = version
            self.input_usages[y][version].append(len(self.ssa))
        all_grad, all_ops = self._init_gradients(ys)
        for fwd_idx in reversed(range(len(self.ssa))):
            new_grad, grad_ops = self._gradients_of(fwd_idx, all_grad)
            all_grad.update(new_grad)
            all_ops.extend(grad_ops)
            sum_ops, summed = self._accumulate(fwd_idx)
            all_grad.update(summed)
            all_ops.extend(sum_ops)
        return all_ops, {name: g for name, g in all_grad.items() if g is not None}


def _add_note(err, note):
    if hasattr(err, "add_note"):  # Python >= 3.11
        err.add_note(note)


def _as_operator_list(ops):
    if hasattr(ops, "ops") and not isinstance(ops, (list, tuple)):
        ops = ops.ops  # a Net
    try:
        ops = list(ops)
    except TypeError:
        raise TypeError(
            f"get_backward_pass: ops must be a list of OperatorDef (or a Net), got {type(ops).__name__}"
        ) from None
    for k, op in enumerate(ops):
        if not isinstance(op, OperatorDef):
            raise TypeError(f"get_backward_pass: ops[{k}] must be an OperatorDef, got {type(op).__name__}")
    return ops


def _as_ys(ys):
    if isinstance(ys, dict):
        items = list(ys.items())
    elif isinstance(ys, (list, tuple)):
        items = [(y, None) for y in ys]
    else:
        raise TypeError(
            f"get_backward_pass: ys must be a list of blob names or a dict {{blob: gradient or None}}, "
            f"got {type(ys).__name__} ({ys!r})"
        )
    result = {}
    for y, g in items:
        if not isinstance(y, str) or not y:
            raise TypeError(f"get_backward_pass: ys must name blobs (non-empty str), got {y!r}")
        if g is None:
            result[y] = None
        elif isinstance(g, str) and g:
            result[y] = g
        elif isinstance(g, tuple) and len(g) == 2 and all(isinstance(n, str) and n for n in g):
            result[y] = GradientSlice(*g)
        else:
            raise TypeError(
                f"get_backward_pass: the gradient of {y!r} must be None, a blob name or a "
                f"GradientSlice(indices, values), got {g!r}"
            )
    return result


def get_backward_pass(ops, ys):
    """Gradient operators that compute the derivatives of ``ys`` through ``ops`` (Caffe2's ``GetBackwardPass``).

    Works on :class:`~caffe2op.OperatorDef` objects of any type that has a
    registered gradient maker (see :func:`~caffe2op.register_gradient`),
    whether or not it has a schema or an implementation.  The algorithm is
    described in :mod:`caffe2op.backward`.

    Parameters
    ----------
    ops : list of OperatorDef or Net
        The forward operators, in execution order.  They are not modified.
    ys : list of str or dict
        The blobs to differentiate.  A list (or tuple) of names: each gets
        the gradient ``ConstantFill([y], [y + "_autogen_grad"], value=1.0)``
        (placed first in the result, on the current
        :func:`~caffe2op.device_scope` or else on the device of the operator
        that wrote ``y``).  A dict ``{y: gradient}``: the gradient is a blob
        name, a :class:`~caffe2op.GradientSlice`, or None for the
        autogenerated one.

    Returns
    -------
    grad_ops : list of OperatorDef
        The gradient operators, in the order they must run.  Those made by
        gradient makers are flagged ``is_gradient_op``; the autogenerated
        ConstantFills and the accumulation Sum/Concat operators are not (as
        in Caffe2).
    grad_map : dict
        Every blob that received a gradient (``ys`` included) mapped to its
        gradient's blob name or :class:`~caffe2op.GradientSlice`; blobs
        without a gradient are left out.

    Raises
    ------
    TypeError
        If ``ops`` or ``ys`` have the wrong form.
    ValueError
        If a ``StopGradient``'s output is read by no operator ("orphan";
        checked before ``ys`` are considered), or a gradient maker needs an
        output gradient that is not there (for example an output that no
        operator reads: mark it with ZeroGradient).
    RuntimeError
        If a gradient operator needs a blob at a version the forward pass
        has overwritten (the message names the blob and says "version"), a
        blob outside its forward operator's scope, or if gradients to
        accumulate mix sparse and dense or devices; also when a type is
        registered with ``should_not_do_gradient``.
    GradientNotRegisteredError
        If an operator on the gradient path has no gradient maker.

    Notes
    -----
    As in Caffe2, the autogenerated gradients are float32 (ConstantFill
    takes its dtype from ``value``), whatever the dtype of ``y``; give
    gradient blobs of your own in a dict for other dtypes.  Gradients of a
    blob read by several operators are accumulated into fresh names, but a
    pass-through gradient (one an operator hands on unchanged, like Sum's)
    shares its blob with the output gradient it came from: Caffe2's
    algorithm assumes no gradient operator later overwrites that blob in
    place, which an in-place Sum followed by in-place gradient operators can
    break.

    Examples
    --------
    >>> import caffe2op
    >>> ops = [
    ...     caffe2op.create_operator("StopGradient", "x", "x_frozen"),
    ...     caffe2op.create_operator("Sum", ["x_frozen", "w"], "y"),
    ... ]
    >>> grad_ops, grad_map = caffe2op.get_backward_pass(ops, ["y"])
    >>> [op.describe() for op in grad_ops]
    ['ConstantFill(y) -> (y_autogen_grad)  value=1.0']
    >>> grad_map
    {'y': 'y_autogen_grad', 'x_frozen': 'y_autogen_grad', 'w': 'y_autogen_grad'}
    """
    ops = _as_operator_list(ops)
    ys = _as_ys(ys)
    # The pass allocates a few container objects per operator and keeps them all until it returns, so
    # with the collector on, its full collections (each traversing every tracked object) come back
    # again and again as the heap grows: 10^5 operators spent 30% of their time there.  Nothing the
    # pass builds is garbage before it returns, so collecting during it finds nothing; the collector
    # is paused for its duration and restored as it was (a cycle left behind is collected later).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _IR(ops).backward(ys)
    finally:
        if was_enabled:
            gc.enable()
