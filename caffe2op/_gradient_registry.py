# SPDX-License-Identifier: BSD-3-Clause
"""The registry of gradient makers: :func:`register_gradient` and the declarations beside it.

One :class:`~caffe2op._tables.Table` maps an operator type to its maker
class (a function registered with :func:`register_gradient` is wrapped in a
``_FunctionMaker`` subclass).  :mod:`caffe2op.gradient` re-exports every
public name defined here.
"""

from . import _tables
from ._gradient_makers import (
    GradientMakerBase,
    GradientNotImplementedYet,
    NoGradient,
    ThrowInTheTowelIfGradientIsCalled,
    _FunctionMaker,
)

__all__ = []  # the public names are caffe2op.gradient's

_GRADIENT_MAKERS = _tables.Table("gradient maker", bumps_generation=False)


def _check_op_type(where, op_type):
    if not isinstance(op_type, str) or not op_type:
        raise TypeError(f"{where}: operator type must be a non-empty str, got {op_type!r}")
    return op_type


def register_gradient(op_type):
    """Register the gradient maker of ``op_type`` (a decorator).

    Decorate either a :class:`GradientMakerBase` subclass (Caffe2's C++
    ``REGISTER_GRADIENT``) or a plain function
    ``f(op_def, g_output) -> (grad_ops, g_input)`` (Caffe2 Python's
    ``GradientRegistry.RegisterGradient``), where ``grad_ops`` is a list of
    :class:`~caffe2op.OperatorDef` (or one, or None) and ``g_input`` has one
    gradient (None, a name or a :class:`GradientSlice`) per forward input.
    As in Caffe2, a class's operators get the forward operator's arguments,
    device and engine and are flagged ``is_gradient_op``; a function's are
    used as it made them.  A later registration for the same type replaces
    the earlier one.

    Parameters
    ----------
    op_type : str
        The forward operator type.

    Returns
    -------
    callable
        The decorator; it returns the decorated class or function unchanged.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str, or the decorated object is
        neither a GradientMakerBase subclass nor callable.

    Examples
    --------
    >>> import caffe2op
    >>> @caffe2op.register_gradient("DocAddOne")
    ... def add_one_gradient(op_def, g_output):
    ...     return [], [g_output[0]]          # d(x + 1)/dx = 1: pass the gradient through
    >>> fwd = caffe2op.OperatorDef(type="DocAddOne", inputs=["x"], outputs=["y"])
    >>> caffe2op.get_gradient_defs(fwd, ["y_grad"])
    ([], ['y_grad'])
    """
    _check_op_type("register_gradient", op_type)

    def decorate(maker):
        if isinstance(maker, type) and issubclass(maker, GradientMakerBase):
            _GRADIENT_MAKERS.set(op_type, maker)
        elif callable(maker) and not isinstance(maker, type):
            _GRADIENT_MAKERS.set(
                op_type, type(f"FunctionMaker[{op_type}]", (_FunctionMaker,), {"function": staticmethod(maker)})
            )
        else:
            raise TypeError(
                f"register_gradient({op_type!r}): expected a GradientMakerBase subclass or a function "
                f"f(op_def, g_output) -> (grad_ops, g_input), got {maker!r}"
            )
        return maker

    return decorate


def no_gradient(op_type):
    """Declare that ``op_type`` has no gradient: gradients stop there, without error (Caffe2's ``NO_GRADIENT``).

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> _ = caffe2op.no_gradient("DocPrint")
    >>> caffe2op.get_gradient_defs(caffe2op.OperatorDef(type="DocPrint", inputs=["x"]), [])
    ([], [None])
    """
    _check_op_type("no_gradient", op_type)
    _GRADIENT_MAKERS.set(op_type, NoGradient)
    return NoGradient


def should_not_do_gradient(op_type):
    """Declare that asking for the gradient of ``op_type`` is an error (Caffe2's ``SHOULD_NOT_DO_GRADIENT``).

    :func:`get_gradient_defs` then raises ``RuntimeError("One should not
    call gradient for operator <type>.")``.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w")
    >>> try:
    ...     caffe2op.get_gradient_defs(op, ["w_grad"])
    ... except RuntimeError as err:
    ...     print(err)
    One should not call gradient for operator SparseNormalize.
    """
    _check_op_type("should_not_do_gradient", op_type)
    _GRADIENT_MAKERS.set(op_type, ThrowInTheTowelIfGradientIsCalled)
    return ThrowInTheTowelIfGradientIsCalled


def gradient_not_implemented_yet(op_type):
    """Declare that ``op_type`` should have a gradient that is not written yet (``GRADIENT_NOT_IMPLEMENTED_YET``).

    :func:`get_gradient_defs` then raises ``NotImplementedError`` (a
    ``RuntimeError``) saying so.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> _ = caffe2op.gradient_not_implemented_yet("DocLater")
    >>> try:
    ...     caffe2op.get_gradient_defs(caffe2op.OperatorDef(type="DocLater", inputs="x", outputs="y"), ["y_grad"])
    ... except NotImplementedError as err:
    ...     print(err)
    Operator DocLater should have a gradient but is not implemented yet.
    """
    _check_op_type("gradient_not_implemented_yet", op_type)
    _GRADIENT_MAKERS.set(op_type, GradientNotImplementedYet)
    return GradientNotImplementedYet


def registered_gradients():
    """Sorted operator types that have a registered gradient maker (of any flavour).

    Returns
    -------
    list of str
        The types.

    Examples
    --------
    >>> import caffe2op
    >>> {"Sum", "StopGradient", "ZeroGradient"} <= set(caffe2op.registered_gradients())
    True
    """
    return sorted(_GRADIENT_MAKERS.snapshot())


def gradient_maker_for(op_type):
    """The registered maker class of ``op_type``, or None."""
    return _GRADIENT_MAKERS.get(op_type)


def describe_gradient(op_type):
    """What the gradient registered for ``op_type`` does, as reStructuredText (for its documentation page).

    The operator pages of the documentation call this: a maker class or
    function is named (linked when it is public) with the first line of its
    own docstring; the three declarations say what they mean.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    str or None
        The description, or None when no gradient maker is registered.

    Examples
    --------
    >>> from caffe2op.gradient import describe_gradient
    >>> print(describe_gradient("ZeroGradient"))
    Gradient maker: :class:`~caffe2op.GetZeroGradientOpGradient` (a class).
    <BLANKLINE>
    The gradient maker of ZeroGradient: ``ConstantFill([X], [X_grad], value=0.0)``.
    >>> print(describe_gradient("SparseNormalize"))  # doctest: +ELLIPSIS
    Asking for a gradient raises :class:`RuntimeError` (``SHOULD_NOT_DO_GRADIENT``, ...
    >>> describe_gradient("NoSuchOperator") is None
    True
    """
    maker = _GRADIENT_MAKERS.get(op_type)
    if maker is None:
        return None
    if issubclass(maker, NoGradient):
        return (
            "No gradient (``NO_GRADIENT``, declared with :func:`caffe2op.no_gradient`): the backward pass "
            "stops here without an error, and the inputs get no gradient from this operator."
        )
    if issubclass(maker, ThrowInTheTowelIfGradientIsCalled):
        return (
            "Asking for a gradient raises :class:`RuntimeError` (``SHOULD_NOT_DO_GRADIENT``, declared with "
            ":func:`caffe2op.should_not_do_gradient`): the operator must not be part of a net that is "
            "differentiated."
        )
    if issubclass(maker, GradientNotImplementedYet):
        return (
            "Not implemented yet (``GRADIENT_NOT_IMPLEMENTED_YET``, declared with "
            ":func:`caffe2op.gradient_not_implemented_yet`): a backward pass through this operator raises "
            ":class:`NotImplementedError`."
        )
    import caffe2op  # (the package imports this module: look it up when called)

    if issubclass(maker, _FunctionMaker):
        target, kind, role = maker.function, "a function", "func"
    else:
        target, kind, role = maker, "a class", "class"
    name = getattr(target, "__name__", repr(target))
    if name in caffe2op.__all__ and getattr(caffe2op, name, None) is target:
        ref = f":{role}:`~caffe2op.{name}`"
    else:
        ref = f"``{name}``"
    lines = [f"Gradient maker: {ref} ({kind})."]
    # Its own docstring only: a maker class without one would otherwise show GradientMakerBase's.
    summary = (target.__doc__ or "").strip().splitlines()
    if summary and summary[0].strip():
        lines += ["", summary[0].strip()]
    return "\n".join(lines)


_tables.add_known_types_provider(registered_gradients)
