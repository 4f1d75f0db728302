# SPDX-License-Identifier: BSD-3-Clause
"""Minimal stand-ins for Caffe2 operators caffe2op does not ship, for the Caffe2-style tests.

Gradient makers (as Caffe2's C++ ones, so classes) for FC, AveragedLoss,
Relu, Softmax, DotProduct, Add, Sub, Mul, SoftmaxWithLoss and LSTMUnit,
``Print`` without gradient, a schema for ``Mul`` (two inputs, as Caffe2's
``NumInputs(2)``), and CPU implementations of ``Mul``, ``Sub`` and their
gradients (same shapes only) so that nets using them run.  The gradient
operator lists are Caffe2's (``GetFCGradient``, ``GetAddGradient`` ...);
the implementations are written for these tests.
"""

import numpy as np

import caffe2op
from caffe2op import GradientMakerBase, Operator, OpSchema, register_cpu_operator, register_gradient


def _single(op_type, inputs, outputs):
    return GradientMakerBase.single_gradient_def(op_type, "", inputs, outputs)


@register_gradient("FC")
class GetFCGradient(GradientMakerBase):
    """``FCGradient([X, W, dY]) -> [dW, db, dX]`` (Caffe2's order)."""

    def get_gradient_defs(self):
        return _single("FCGradient", [self.I(0), self.I(1), self.GO(0)], [self.GI(1), self.GI(2), self.GI(0)])


@register_gradient("AveragedLoss")
class GetAveragedLossGradient(GradientMakerBase):
    """``AveragedLossGradient([X, dY]) -> dX``."""

    def get_gradient_defs(self):
        return _single("AveragedLossGradient", [self.I(0), self.GO(0)], [self.GI(0)])


@register_gradient("Relu")
class GetReluGradient(GradientMakerBase):
    """``ReluGradient([Y, dY]) -> dX``."""

    def get_gradient_defs(self):
        return _single("ReluGradient", [self.O(0), self.GO(0)], [self.GI(0)])


@register_gradient("Softmax")
class GetSoftmaxGradient(GradientMakerBase):
    """``SoftmaxGradient([Y, dY]) -> dX``."""

    def get_gradient_defs(self):
        return _single("SoftmaxGradient", [self.O(0), self.GO(0)], [self.GI(0)])


@register_gradient("DotProduct")
class GetDotProductGradient(GradientMakerBase):
    """``DotProductGradient([X, Y, dZ]) -> [dX, dY]``."""

    def get_gradient_defs(self):
        return _single("DotProductGradient", [self.I(0), self.I(1), self.GO(0)], [self.GI(0), self.GI(1)])


def _binary(op_type):
    class GetBinaryGradient(GradientMakerBase):
        def get_gradient_defs(self):
            return _single(f"{op_type}Gradient", [self.GO(0), self.I(0), self.I(1)], [self.GI(0), self.GI(1)])

    GetBinaryGradient.__name__ = f"Get{op_type}Gradient"
    GetBinaryGradient.__doc__ = f"``{op_type}Gradient([dC, A, B]) -> [dA, dB]``."
    return register_gradient(op_type)(GetBinaryGradient)


for _op_type in ("Add", "Sub", "Mul"):
    _binary(_op_type)


@register_gradient("SoftmaxWithLoss")
class GetSoftmaxWithLossGradient(GradientMakerBase):
    """``SoftmaxWithLossGradient([X, labels, softmax, dloss]) -> dX``."""

    def get_gradient_defs(self):
        return _single("SoftmaxWithLossGradient", [self.I(0), self.I(1), self.O(0), self.GO(1)], [self.GI(0)])


@register_gradient("LSTMUnit")
class GetLSTMUnitGradient(GradientMakerBase):
    """Needs the gradients of both outputs (hidden and cell), as Caffe2's."""

    def get_gradient_defs(self):
        inputs = [self.I(i) for i in range(5)] + [self.O(0), self.O(1), self.GO(0), self.GO(1)]
        return _single("LSTMUnitGradient", inputs, [self.GI(0), self.GI(1), self.GI(2)])


caffe2op.no_gradient("Print")

caffe2op.register_schema(
    OpSchema(
        "Mul",
        inputs=[("A", "First factor."), ("B", "Second factor.")],
        outputs=[("C", "A * B, element-wise.")],
        doc="Element-wise product (a test stand-in for Caffe2's Mul; same shapes only).",
    )
)


class _Elementwise(Operator):
    function = None

    def run_on_device(self):
        args = [self.input(i) for i in range(self.num_inputs)]
        results = type(self).function(*args)
        for k, value in enumerate(results):
            self.set_output(k, np.ascontiguousarray(value))


def _register(op_type, function):
    register_cpu_operator(op_type, type(op_type, (_Elementwise,), {"function": staticmethod(function)}))


_register("Mul", lambda a, b: (a * b,))
_register("Sub", lambda a, b: (a - b,))
_register("MulGradient", lambda dc, a, b: (dc * b, dc * a))
_register("SubGradient", lambda dc, a, b: (dc, -dc))
_register("Relu", lambda x: (np.maximum(x, 0),))
