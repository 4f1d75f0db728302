# SPDX-License-Identifier: BSD-3-Clause
"""ZeroGradient: a forward no-op whose gradient is zeros.

Caffe2 used it to mark a blob that receives no gradient from the loss (for
instance RNN outputs that are not used), so that a backward pass that needs
that blob's gradient can still be built: its gradient maker emits
``ConstantFill(X) -> X_grad`` with ``value=0.0`` (float32, shaped like X).
"""

from ..gradient import GradientMakerBase, register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import OpSchema, register_schema

__all__ = ["GetZeroGradientOpGradient", "zero_gradient"]

ZERO_GRADIENT_SCHEMA = register_schema(
    OpSchema(
        "ZeroGradient",
        num_inputs=1,
        num_outputs=0,
        inputs=[("X", "The blob whose gradient should be zero.")],
        doc="Forward: does nothing (reads no data, writes nothing).  Backward: its gradient "
        "maker ``GetZeroGradientOpGradient`` emits ``ConstantFill([X], [X_grad], value=0.0)``, "
        "so X gets an all-zero float32 gradient of its shape.  The backward-pass builder runs "
        "this maker even though the operator has no outputs.",
        formula=r"\frac{\partial L}{\partial X} = 0",
        example="""\
>>> import numpy as np, caffe2op
>>> caffe2op.zero_gradient(np.ones(3)) is None
True
""",
    )
)


def zero_gradient(x):
    """Do nothing: the forward pass of ZeroGradient.

    Provided so that code mirroring a net can call every operator
    functionally.  The operator's effect is on the backward pass only (see
    :class:`GetZeroGradientOpGradient`).

    Parameters
    ----------
    x : array_like
        The blob whose gradient is zero; it is neither read nor modified.

    Returns
    -------
    None
        ZeroGradient has no outputs.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> x = np.ones(3)
    >>> caffe2op.zero_gradient(x) is None
    True
    """
    return None


@register_cpu_operator("ZeroGradient")
class ZeroGradientCPU(Operator):
    """ZeroGradient on the CPU: nothing to compute (the input must exist, as in Caffe2)."""

    def run_on_device(self):
        return None


@register_gradient("ZeroGradient")
class GetZeroGradientOpGradient(GradientMakerBase):
    """The gradient maker of ZeroGradient: ``ConstantFill([X], [X_grad], value=0.0)``.

    The fill takes X's shape and, as in Caffe2, the float32 dtype of its
    ``value`` (never X's dtype).  The backward-pass builder runs this maker
    even though ZeroGradient has no outputs, so X gets a gradient where no
    operator would give it one.

    Parameters
    ----------
    op_def : OperatorDef
        The ZeroGradient operator.
    g_output : list
        Its output gradients (an empty list: it has no outputs).

    Examples
    --------
    >>> import caffe2op
    >>> fwd = caffe2op.create_operator("ZeroGradient", "cell", [])
    >>> [op], g_input = caffe2op.GetZeroGradientOpGradient(fwd, []).get()
    >>> op.describe(), g_input
    ('ConstantFill(cell) -> (cell_grad)  value=0.0', ['cell_grad'])
    """

    def get_gradient_defs(self):
        """``[ConstantFill([X], [X_grad], value=0.0)]``, recording ``X_grad`` as X's gradient.

        Returns
        -------
        list of OperatorDef
            The one ConstantFill operator.

        Examples
        --------
        The operator as the maker writes it; :func:`caffe2op.get_gradient_defs`
        then copies ZeroGradient's device option and arguments onto it:

        >>> import caffe2op
        >>> fwd = caffe2op.create_operator("ZeroGradient", "cell", [])
        >>> maker = caffe2op.GetZeroGradientOpGradient(fwd, [])
        >>> [op] = maker.get_gradient_defs()
        >>> op.describe(), maker.g_input()
        ('ConstantFill(cell) -> (cell_grad)  value=0.0', ['cell_grad'])
        """
        return self.single_gradient_def("ConstantFill", "", [self.I(0)], [self.GI(0)], value=0.0)


@register_opencl_operator("ZeroGradient")
@register_cuda_operator("ZeroGradient")
class ZeroGradientOpenCL(Operator):
    """ZeroGradient on an OpenCL device: nothing to compute, no kernel launched."""

    def run_on_device(self):
        return None
