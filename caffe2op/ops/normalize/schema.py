# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and NormalizeGradient: schemas, the arguments of the functional form, and the gradient maker."""

from ...gradient import GradientMakerBase, gradient_not_implemented_yet, register_gradient
from ...schema import Argument, OpSchema, non_negative_finite, register_schema

EPS = 1e-12

_AXIS = Argument(
    "axis",
    int,
    default=-1,
    doc="Axis along which the vectors lie; negative values count from the end (default -1, the last axis).",
)

NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "Normalize",
        num_inputs=1,
        num_outputs=1,
        inputs=[("X", "float16, float32 or float64 array of any rank >= 1.")],
        outputs=[("Y", "X with every vector along axis scaled to unit L2 norm (same dtype and shape).")],
        args=[_AXIS],
        identical_type_and_shape=True,
        doc="Divide every vector along ``axis`` by ``max(||v||_2, 1e-12)``: each vector gets unit "
        "L2 norm and an all-zero vector stays zero.  With a 2-D weight matrix and ``axis=0`` "
        "every column is normalised.  Any axis is handled without a transposed copy; norms "
        "are accumulated in float64 (float32 for float16 data) and results do not depend on "
        "the number of threads.  As in Caffe2 (no ``AllowInplace`` in its schema) the output "
        "must be another blob than the input; to normalise a blob in place use the functional "
        "form ``caffe2op.normalize(w, out=w)``.  Gradient: ``NormalizeGradient``, which needs "
        "X.  For scipy.sparse input and the max-norm / constant-norm modes use the functional "
        "form :func:`caffe2op.normalize`.",
        formula=r"Y_{v} = \frac{X_{v}}{\max\left(\lVert X_{v} \rVert_2,\ 10^{-12}\right)}"
        r"\quad\text{for every vector } X_{v} \text{ along axis}",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("w", np.array([[3.0, 0.0], [4.0, 0.0]], dtype=np.float32))
>>> ws.run_operator_once(caffe2op.create_operator("Normalize", "w", "w_unit", axis=0))
>>> ws.fetch_blob("w_unit")
array([[0.6, 0. ],
       [0.8, 0. ]], dtype=float32)
""",
    )
)

NORMALIZE_GRADIENT_SCHEMA = register_schema(
    OpSchema(
        "NormalizeGradient",
        num_inputs=2,
        num_outputs=1,
        inputs=[("X", "The input of the forward Normalize."), ("dY", "Gradient of the loss with respect to Y.")],
        outputs=[("dX", "Gradient of the loss with respect to X (dtype and shape of X).")],
        args=[_AXIS],
        doc="Backward pass of ``Normalize``: per vector ``x`` along ``axis`` with "
        "``n = max(||x||_2, 1e-12)``, ``dX = dY / n - X * <X, dY> / n**3``.  X and dY must have "
        "the same dtype (float16, float32 or float64) and shape.  Its own gradient (a second "
        "derivative) is not implemented: asking for it raises ``NotImplementedError``.",
        formula=r"\frac{\partial L}{\partial X_{v}} = \frac{dY_{v}}{n_v} - "
        r"X_{v}\,\frac{\langle X_{v}, dY_{v}\rangle}{n_v^{3}},\qquad "
        r"n_v = \max\left(\lVert X_{v} \rVert_2,\ 10^{-12}\right)",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.array([3.0, 4.0]))
>>> ws.feed_blob("dy", np.array([1.0, 0.0]))
>>> ws.run_operator_once(caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx"))
>>> ws.fetch_blob("dx")
array([ 0.128, -0.096])
""",
    )
)

# SparseNormalize's modes, offered by the functional form along an axis.
_NORM = Argument("norm", float, default=1.0, validator=non_negative_finite, doc="Target L2 norm (finite, >= 0).")
_USE_MAX_NORM = Argument(
    "use_max_norm", bool, default=False, doc="Only scale down the vectors whose norm exceeds ``norm``."
)


@register_gradient("Normalize")
class GetNormalizeGradient(GradientMakerBase):
    """Normalize's gradient maker: ``NormalizeGradient([X, dY]) -> dX`` (Caffe2's ``GetNormalizeGradient``).

    The forward operator's ``axis`` reaches the gradient operator with the
    other copied arguments (see :func:`caffe2op.get_gradient_defs`).  The
    gradient reads the forward *input*, so a Normalize that overwrote its
    input (``X -> X``) cannot be differentiated.  Caffe2's backward-pass
    algorithm would not notice (for an in-place operator the input's name is
    also the output's, at the output's version) and would silently compute
    the gradient from the normalised output, wrong by the factor ``||x||``;
    this maker raises a ``RuntimeError`` instead, worded like the builder's
    version errors.

    Parameters
    ----------
    op_def : OperatorDef
        The Normalize operator.
    g_output : list
        The gradient of its output (a dense gradient's blob name).

    Examples
    --------
    >>> import caffe2op
    >>> fwd = caffe2op.create_operator("Normalize", "w", "w_unit", axis=0)
    >>> ops, g_input = caffe2op.get_gradient_defs(fwd, ["w_unit_grad"])
    >>> ops[0].describe(), g_input
    ('NormalizeGradient(w, w_unit_grad) -> (w_grad)  axis=0', ['w_grad'])
    """

    def get_gradient_defs(self):
        """``[NormalizeGradient([X, dY], [dX])]``, recording ``X_grad`` as X's gradient.

        Returns
        -------
        list of OperatorDef
            The one NormalizeGradient operator.

        Raises
        ------
        ValueError
            If the output gradient is sparse or not provided.
        """
        # An in-place Normalize (which would have lost X) fails its schema before this runs (VerifyOp).
        return self.single_gradient_def("NormalizeGradient", "", [self.I(0), self.GO(0)], [self.GI(0)])


# A second derivative exists but is not implemented (Caffe2 registered none either):
# asking for it raises instead of silently giving zero.
gradient_not_implemented_yet("NormalizeGradient")
