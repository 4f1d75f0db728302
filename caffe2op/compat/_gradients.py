# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``GradientRegistry`` for :mod:`caffe2op.compat.core` (which re-exports it)."""

from .. import core as _core
from ..backward import get_backward_pass
from ..gradient import get_gradient_defs, register_gradient
from . import caffe2_pb2

# --- gradients -----------------------------------------------------------------------------------


def _native_ops(ops, where):
    if ops is None:
        return []
    if isinstance(ops, (caffe2_pb2.OperatorDef, _core.OperatorDef)):
        ops = [ops]
    try:
        return [caffe2_pb2.as_native(op) for op in ops]
    except TypeError as err:
        raise TypeError(f"{where}: {err}") from None


def _ys(ys):
    """Blob names to differentiate, as Caffe2's IR takes them (no name scope added)."""
    if isinstance(ys, dict):
        return {str(y): (g if g is None or isinstance(g, tuple) else str(g)) for y, g in ys.items()}
    if isinstance(ys, str):
        return [str(ys)]
    return [str(y) for y in ys]


class GradientRegistry:
    """Caffe2's ``core.GradientRegistry``: register gradient functions, build gradients.

    Registrations go to caffe2op's one gradient registry
    (:func:`caffe2op.register_gradient`); functions see and return
    OperatorDef messages.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> @core.GradientRegistry.RegisterGradient("DocCompatScale")
    ... def scale_gradient(op, g_output):
    ...     return core.CreateOperator("DocCompatScale", g_output, [op.input[0] + "_grad"]), [op.input[0] + "_grad"]
    >>> ops = [core.CreateOperator("DocCompatScale", "x", "y")]
    >>> grads, grad_map = core.GradientRegistry.GetBackwardPass(ops, {"y": "y_grad"})
    >>> [str(g.native.describe()) for g in grads], grad_map["x"]
    (['DocCompatScale(y_grad) -> (x_grad)'], 'x_grad')
    """

    @classmethod
    def RegisterGradient(cls, op_type):  # noqa: N802 - Caffe2's name
        """Decorator registering ``f(op, g_output) -> (grad_ops, g_input)`` for ``op_type``.

        Parameters
        ----------
        op_type : str
            The forward operator type.

        Returns
        -------
        callable
            The decorator (it returns the function unchanged).

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> @core.GradientRegistry.RegisterGradient("DocCompatIdentity")
        ... def identity_gradient(op, g_output):
        ...     return [], g_output
        >>> core.GradientRegistry.GetGradientForOp(core.CreateOperator("DocCompatIdentity", "x", "y"), ["g"])
        ([], ['g'])
        """

        def decorate(function):
            def adapted(op_def, g_output):
                grad_ops, g_input = function(caffe2_pb2.view(op_def), list(g_output))
                return _native_ops(grad_ops, f"gradient of {op_type}"), g_input

            adapted.__name__ = getattr(function, "__name__", "gradient")
            adapted.__doc__ = function.__doc__
            register_gradient(op_type)(adapted)
            return function

        return decorate

    @classmethod
    def GetGradientForOp(cls, op, g_output):  # noqa: N802 - Caffe2's name
        """The gradient operators of one operator (:func:`caffe2op.get_gradient_defs`).

        Parameters
        ----------
        op : caffe2_pb2.OperatorDef or caffe2op.OperatorDef
            The forward operator.
        g_output : list
            One gradient (name, GradientSlice or None) per output.

        Returns
        -------
        tuple of (list of caffe2_pb2.OperatorDef, list)
            The gradient operators and one gradient per input.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> ops, g_input = core.GradientRegistry.GetGradientForOp(core.CreateOperator("Copy", "x", "y"), ["y_grad"])
        >>> ops[0].type, g_input
        ('CopyOnDeviceLike', ['x_grad'])
        """
        ops, g_input = get_gradient_defs(caffe2_pb2.as_native(op), [None if g is None else g for g in g_output])
        return [caffe2_pb2.view(o) for o in ops], g_input

    @classmethod
    def GetBackwardPass(cls, operators, ys, ys_generate_gradient=False):  # noqa: N802 - Caffe2's name
        """``(gradient operators as messages, grad_map)`` (:func:`caffe2op.get_backward_pass`).

        Parameters
        ----------
        operators : list of OperatorDef
            Forward operators (messages or caffe2op ones).
        ys : list or dict
            Blobs to differentiate.
        ys_generate_gradient : bool, default False
            Ignored (Caffe2 used it internally).

        Returns
        -------
        tuple of (list of caffe2_pb2.OperatorDef, dict)
            The gradient operators and the gradient map.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> ops = [core.CreateOperator("StopGradient", "x", "y"), core.CreateOperator("Sum", ["y", "w"], "s")]
        >>> grads, grad_map = core.GradientRegistry.GetBackwardPass(ops, ["s"])
        >>> [g.type for g in grads], sorted(grad_map)
        (['ConstantFill'], ['s', 'w', 'y'])
        """
        ops, grad_map = get_backward_pass(_native_ops(operators, "GetBackwardPass"), _ys(ys))
        return [caffe2_pb2.view(o) for o in ops], grad_map
