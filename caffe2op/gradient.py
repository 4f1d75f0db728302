# SPDX-License-Identifier: BSD-3-Clause
"""Gradient makers and their registry: how each operator type builds its gradient operators.

Caffe2 kept two registries of gradient makers, a C++ one (classes deriving
from ``GradientMakerBase``) and a Python one (functions
``f(op, g_output) -> (grad_ops, g_input)``).  Here both styles register into
one registry with :func:`register_gradient`, and :func:`get_gradient_defs`
first checks the forward operator against its schema (Caffe2's
``VerifyOp``), then calls the maker.  The operators of a maker class are
post-processed as Caffe2's C++ ``GetGradientForOp`` did: the forward
operator's device option, engine and arguments are copied onto them and
they are flagged ``is_gradient_op``.  The operators of a gradient function
are returned as the function made them, as Caffe2's Python registry did.
``g_input`` must have one entry per forward input.

Gradients are named by strings (dense gradients, ``X_grad``) or by
:class:`GradientSlice` pairs (sparse gradients, ``X_grad_indices`` and
``X_grad_values``); ``None`` means "no gradient".

Errors
------
* :class:`GradientNotRegisteredError` (a ``KeyError``): no maker is
  registered for the operator type.
* ``RuntimeError``: the type is registered with :func:`should_not_do_gradient`
  ("One should not call gradient for operator X.").
* ``NotImplementedError`` (a ``RuntimeError``): the type is registered with
  :func:`gradient_not_implemented_yet`.
* ``ValueError``: a maker asked for a missing or wrongly typed output
  gradient (``GO`` of an output without a dense gradient), mixed a dense and
  a sparse gradient for one input, returned a ``g_input`` of the wrong length
  or a sparse gradient without both indices and values.
* ``IndexError``: ``I``/``O``/``GI``/``GO``... with an index out of range.
* ``TypeError``: a maker returned something that is not operator
  definitions and gradient names.
* :class:`~caffe2op.SchemaError`: the forward operator breaks its schema.
"""

import difflib

# The maker machinery and the registry live in their own modules; their names are importable from here.
from ._gradient_makers import (  # noqa: F401
    GradientMakerBase,
    GradientNotImplementedYet,
    GradientNotRegisteredError,
    GradientSlice,
    NoGradient,
    ThrowInTheTowelIfGradientIsCalled,
    _as_gradients,
    _FunctionMaker,
)
from ._gradient_registry import (  # noqa: F401
    _GRADIENT_MAKERS,
    describe_gradient,
    gradient_maker_for,
    gradient_not_implemented_yet,
    no_gradient,
    register_gradient,
    registered_gradients,
    should_not_do_gradient,
)
from .core import OperatorDef, _fresh_copy
from .errors import SchemaError
from .schema import get_schema

__all__ = [
    "GradientMakerBase",
    "GradientNotRegisteredError",
    "GradientSlice",
    "get_gradient_defs",
    "gradient_not_implemented_yet",
    "no_gradient",
    "register_gradient",
    "registered_gradients",
    "should_not_do_gradient",
]


def _verify_forward_op(op_def):
    """Check the forward operator against its schema, as Caffe2's ``GradientMakerBase::VerifyOp`` did."""
    schema = get_schema(op_def.type, None)
    if schema is None:
        return
    try:
        schema.verify(op_def)
    except SchemaError as err:
        raise type(err)(
            f"{op_def.type}: the forward operator does not pass its schema, so it has no gradient "
            f"(Caffe2's GradientMakerBase::VerifyOp): {err}. Operator: {op_def.describe()}"
        ) from err


def get_gradient_defs(op_def, g_output):
    """The gradient operators of one forward operator, and the gradients of its inputs.

    Checks ``op_def`` against its schema (Caffe2's ``VerifyOp``) and calls
    the maker registered for ``op_def.type``.  For a maker class, as
    Caffe2's C++ ``GetGradientForOp``: copies the forward operator's
    ``device_option`` (when set), ``engine`` (when set) and arguments onto
    every gradient operator (an argument the gradient operator sets itself
    keeps its own value) and flags them ``is_gradient_op``.  The operators
    of a gradient function are kept as the function made them, as in
    Caffe2's Python ``GradientRegistry``.  Either way there must be one
    input gradient per forward input.  The returned operators are new
    objects: the maker's own are never modified.

    Parameters
    ----------
    op_def : OperatorDef
        The forward operator.
    g_output : sequence
        One entry per output of ``op_def``: its gradient's blob name, a
        :class:`GradientSlice` (or a 2-tuple ``(indices, values)``), or None.

    Returns
    -------
    grad_ops : list of OperatorDef
        The gradient operators.
    g_input : list
        One entry per input of ``op_def``: a dense gradient name, a
        :class:`GradientSlice`, or None.

    Raises
    ------
    GradientNotRegisteredError
        If no maker is registered for ``op_def.type``.
    RuntimeError
        If the type is registered with :func:`should_not_do_gradient`
        (``NotImplementedError``, a subclass, for
        :func:`gradient_not_implemented_yet`).
    ValueError
        If ``g_output`` has the wrong length, the maker asks for a missing
        output gradient, mixes dense and sparse for an input, or returns a
        ``g_input`` of the wrong length.
    TypeError
        If ``op_def`` is not an OperatorDef, ``g_output`` is not a list, or
        the maker returns something other than operator definitions and a
        list of gradients.
    SchemaError
        If ``op_def`` breaks its operator's schema.

    Examples
    --------
    >>> import caffe2op
    >>> fwd = caffe2op.create_operator("ZeroGradient", "h", [])
    >>> ops, g_input = caffe2op.get_gradient_defs(fwd, [])
    >>> ops[0].describe(), ops[0].is_gradient_op, g_input
    ('ConstantFill(h) -> (h_grad)  value=0.0', True, ['h_grad'])
    """
    # Exact types are tested first throughout: a backward pass calls this once per operator.
    if type(op_def) is not OperatorDef and not isinstance(op_def, OperatorDef):
        raise TypeError(f"get_gradient_defs: expected an OperatorDef, got {type(op_def).__name__}")
    if type(g_output) is not list and (isinstance(g_output, (str, bytes, dict)) or not hasattr(g_output, "__iter__")):
        raise TypeError(
            f"{op_def.type}: g_output must be a list with one gradient (a blob name, a GradientSlice or None) "
            f"per output, got {type(g_output).__name__} ({g_output!r})"
        )
    maker_cls = _GRADIENT_MAKERS.get(op_def.type)
    if maker_cls is None:
        message = (
            f"No gradient maker is registered for operator type {op_def.type!r}. "
            f"Register one with caffe2op.register_gradient({op_def.type!r}), or declare it with "
            f"caffe2op.no_gradient({op_def.type!r}) if gradients should stop there."
        )
        close = difflib.get_close_matches(op_def.type, sorted(_GRADIENT_MAKERS.snapshot()), n=3, cutoff=0.6)
        if close:
            message += " Did you mean: " + ", ".join(close) + "?"
        raise GradientNotRegisteredError(message)
    _verify_forward_op(op_def)
    maker = maker_cls(op_def, g_output)
    ops, g_input = maker.get()
    # Caffe2 returns the operators of a Python gradient function as the function made them; only
    # its C++ makers (our GradientMakerBase classes) copy the forward operator's settings.
    is_function = issubclass(maker_cls, _FunctionMaker)
    if type(ops) is not list:
        if isinstance(ops, OperatorDef):
            ops = [ops]
        try:
            ops = list(ops)
        except TypeError:
            raise TypeError(
                f"{op_def.type}: the gradient maker must return a list of OperatorDef, got {type(ops).__name__}"
            ) from None
    if not is_function:
        device_option = op_def.device_option if maker_cls.copy_device_option else None
        engine = op_def.engine if maker_cls.copy_engine else ""
        forward_args = op_def.args if maker_cls.copy_arguments else None
    grad_ops = []
    for op in ops:
        if type(op) is not OperatorDef and not isinstance(op, OperatorDef):
            raise TypeError(
                f"{op_def.type}: the gradient maker returned {type(op).__name__} ({op!r}) among its operators; "
                f"expected OperatorDef"
            )
        # A fresh object: the backward pass renames outputs in place.
        op = _fresh_copy(op)
        if not is_function:
            if device_option is not None:
                op.device_option = device_option
            if engine:
                op.engine = engine
            if forward_args:
                op.args = {**forward_args, **op.args}
            op.is_gradient_op = True
        grad_ops.append(op)
    if type(g_input) is not list:
        if isinstance(g_input, (str, bytes, dict)):
            raise TypeError(
                f"{op_def.type}: the gradient maker must return g_input as a list with one gradient per input, "
                f"got {type(g_input).__name__} ({g_input!r})"
            )
        try:
            g_input = list(g_input)
        except TypeError:
            raise TypeError(
                f"{op_def.type}: the gradient maker must return g_input as a list, got {type(g_input).__name__}"
            ) from None
    if len(g_input) != len(op_def.inputs):
        raise ValueError(
            f"{op_def.type}: the gradient maker returned {len(g_input)} input gradients for {len(op_def.inputs)} inputs"
        )
    g_input = _as_gradients(op_def.type, "input", op_def.inputs, g_input)
    return grad_ops, g_input
