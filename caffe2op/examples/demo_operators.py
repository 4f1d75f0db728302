# SPDX-License-Identifier: BSD-3-Clause
"""The demo's operators, written in Python with NumPy: schema, one class for every device, gradient maker.

``EmbeddingLookup`` (its table gradient is a :class:`~caffe2op.GradientSlice`
made by no operator), ``RowDot``, ``Linear``, ``BPRLoss`` (two outputs: loss
and margin) with their gradient operators, and the optimizer ``SparseSGD``.
Importing this module registers them (:mod:`caffe2op.examples.embedding_demo`
does); on a device they read and write their blobs through the device
backend, which shows how an operator written in Python runs
everywhere.
"""

import numpy as np

from .. import (
    GradientMakerBase,
    Operator,
    OpSchema,
    register_cpu_operator,
    register_cuda_operator,
    register_gradient,
    register_opencl_operator,
    register_schema,
    should_not_do_gradient,
)
from ..schema import Argument

__all__ = []  # the operators are used through their registered names


# --- operators: schema, one implementation for every device, gradient maker -----------------------


def _register_everywhere(op_type):
    """Register one implementation class for the CPU and for the OpenCL/CUDA devices."""

    def decorate(cls):
        register_cpu_operator(op_type, cls)
        register_opencl_operator(op_type, cls)
        register_cuda_operator(op_type, cls)
        return cls

    return decorate


class _NumPyOperator(Operator):
    """An operator computed with NumPy: device blobs make a round trip through the host."""

    def host_input(self, index):
        """Input ``index`` as a NumPy array (the blob itself on the CPU, a host copy on a device)."""
        value = self.input(index)
        return value if isinstance(value, np.ndarray) else self.backend.to_host(value)

    def put(self, index, array):
        """Store the NumPy ``array`` as output ``index`` on the operator's device."""
        array = np.asarray(array, order="C")  # (ascontiguousarray would turn a 0-d loss into 1-d)
        self.set_output(index, array if self.backend.owns(array) else self.backend.from_host(array))


def _check_rows(op, table, name, ids):
    if table.ndim != 2:
        raise ValueError(f"{op}: {name} must be a 2-D table, got shape {table.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be integers, got {ids.dtype}")
    bad = (ids < 0) | (ids >= len(table))
    if bad.any():
        raise IndexError(
            f"{op}: id {int(ids[bad][0])} is out of range for {name} with {len(table)} rows "
            f"(valid ids are 0..{len(table) - 1})"
        )


register_schema(
    OpSchema(
        "EmbeddingLookup",
        num_inputs=2,
        num_outputs=1,
        inputs=[("table", "Embedding table (rows x dim)."), ("ids", "1-D integer ids of the rows to read.")],
        outputs=[("rows", "table[ids] (len(ids) x dim).")],
        doc="Read rows of an embedding table.  Gradient: a GradientSlice (ids, rows' gradient) for the "
        "table, made by no operator; no gradient for the ids.",
    )
)


@_register_everywhere("EmbeddingLookup")
class EmbeddingLookupOp(_NumPyOperator):
    """``rows = table[ids]``."""

    def run_on_device(self):
        table, ids = self.host_input(0), self.host_input(1).reshape(-1)
        _check_rows(self.type, table, "table", ids)
        self.put(0, table[ids])


@register_gradient("EmbeddingLookup")
class GetEmbeddingLookupGradient(GradientMakerBase):
    """The table's gradient is sparse: row ``ids[k]`` gets ``rows_grad[k]`` (as Caffe2's Gather)."""

    def get_gradient_defs(self):
        self.set_sparse(0, self.I(1), self.GO(0))
        return []


register_schema(
    OpSchema(
        "RowDot",
        num_inputs=2,
        num_outputs=1,
        inputs=[("a", "Matrix (n x d)."), ("b", "Matrix (n x d).")],
        outputs=[("s", "Row-wise dot products (n).")],
        doc="s[k] = a[k] . b[k].  Gradient: RowDotGradient.",
    )
)


@_register_everywhere("RowDot")
class RowDotOp(_NumPyOperator):
    """``s[k] = a[k] . b[k]``."""

    def run_on_device(self):
        a, b = self.host_input(0), self.host_input(1)
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"{self.type}: a and b must be matrices of one shape, got {a.shape} and {b.shape}")
        self.put(0, np.einsum("ij,ij->i", a, b))


register_schema(
    OpSchema(
        "RowDotGradient",
        num_inputs=3,
        num_outputs=2,
        inputs=[("a", "Forward input a."), ("b", "Forward input b."), ("ds", "Gradient of s.")],
        outputs=[("da", "ds[k] * b[k]."), ("db", "ds[k] * a[k].")],
        doc="Gradient of RowDot.",
    )
)


@_register_everywhere("RowDotGradient")
class RowDotGradientOp(_NumPyOperator):
    """``da = ds * b``, ``db = ds * a`` (row-wise)."""

    def run_on_device(self):
        a, b, ds = self.host_input(0), self.host_input(1), self.host_input(2)
        self.put(0, ds[:, None] * b)
        self.put(1, ds[:, None] * a)


@register_gradient("RowDot")
class GetRowDotGradient(GradientMakerBase):
    """RowDotGradient(a, b, ds) -> (da, db)."""

    def get_gradient_defs(self):
        return self.single_gradient_def(
            "RowDotGradient", "", [self.I(0), self.I(1), self.GO(0)], [self.GI(0), self.GI(1)]
        )


register_schema(
    OpSchema(
        "Linear",
        num_inputs=2,
        num_outputs=1,
        inputs=[("x", "Inputs (n x f)."), ("w", "Weights (f x d).")],
        outputs=[("y", "x @ w (n x d).")],
        doc="A dense layer without bias: y = x @ w.  Gradient: LinearGradient.",
    )
)


@_register_everywhere("Linear")
class LinearOp(_NumPyOperator):
    """``y = x @ w``."""

    def run_on_device(self):
        x, w = self.host_input(0), self.host_input(1)
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"{self.type}: cannot multiply shapes {x.shape} and {w.shape}")
        self.put(0, x @ w)


register_schema(
    OpSchema(
        "LinearGradient",
        num_inputs=3,
        num_outputs=2,
        inputs=[("x", "Forward input."), ("w", "Forward weights."), ("dy", "Gradient of y.")],
        outputs=[("dx", "dy @ w.T"), ("dw", "x.T @ dy")],
        doc="Gradient of Linear.",
    )
)


@_register_everywhere("LinearGradient")
class LinearGradientOp(_NumPyOperator):
    """``dx = dy @ w.T``, ``dw = x.T @ dy``."""

    def run_on_device(self):
        x, w, dy = self.host_input(0), self.host_input(1), self.host_input(2)
        self.put(0, dy @ w.T)
        self.put(1, x.T @ dy)


@register_gradient("Linear")
class GetLinearGradient(GradientMakerBase):
    """LinearGradient(x, w, dy) -> (dx, dw)."""

    def get_gradient_defs(self):
        return self.single_gradient_def(
            "LinearGradient", "", [self.I(0), self.I(1), self.GO(0)], [self.GI(0), self.GI(1)]
        )


register_schema(
    OpSchema(
        "BPRLoss",
        num_inputs=2,
        num_outputs=2,
        inputs=[("s_pos", "Scores of the positive items (n)."), ("s_neg", "Scores of the negative items (n).")],
        outputs=[("loss", "mean(log(1 + exp(-margin))), a scalar."), ("margin", "s_pos - s_neg (n).")],
        doc="Bayesian personalised ranking loss.  Its gradient needs the gradients of both outputs; "
        "mark ``margin`` with ZeroGradient when nothing else differentiates it.",
    )
)


@_register_everywhere("BPRLoss")
class BPRLossOp(_NumPyOperator):
    """``margin = s_pos - s_neg``, ``loss = mean(softplus(-margin))``."""

    def run_on_device(self):
        s_pos, s_neg = self.host_input(0), self.host_input(1)
        if s_pos.shape != s_neg.shape or s_pos.ndim != 1 or s_pos.size == 0:
            raise ValueError(
                f"{self.type}: scores must be non-empty vectors of one shape, got {s_pos.shape} and {s_neg.shape}"
            )
        margin = s_pos - s_neg
        self.put(0, np.asarray(np.mean(np.logaddexp(0.0, -margin)), dtype=margin.dtype))
        self.put(1, margin)


register_schema(
    OpSchema(
        "BPRLossGradient",
        num_inputs=3,
        num_outputs=2,
        inputs=[
            ("margin", "Forward output margin."),
            ("dloss", "Gradient of loss."),
            ("dmargin", "Gradient of margin."),
        ],
        outputs=[("ds_pos", "Gradient of s_pos."), ("ds_neg", "Gradient of s_neg.")],
        doc="Gradient of BPRLoss.",
    )
)


@_register_everywhere("BPRLossGradient")
class BPRLossGradientOp(_NumPyOperator):
    """``d margin = dloss * -sigmoid(-margin) / n + dmargin``; ``ds_pos = d margin``, ``ds_neg = -d margin``."""

    def run_on_device(self):
        margin, dloss, dmargin = self.host_input(0), self.host_input(1), self.host_input(2)
        sigmoid_neg = 0.5 * (1.0 - np.tanh(0.5 * margin))  # sigmoid(-margin), overflow-free
        total = (-float(dloss) / margin.size) * sigmoid_neg + dmargin
        total = total.astype(margin.dtype, copy=False)
        self.put(0, total)
        self.put(1, -total)


@register_gradient("BPRLoss")
class GetBPRLossGradient(GradientMakerBase):
    """BPRLossGradient(margin, dloss, dmargin) -> (ds_pos, ds_neg): GO(1) must exist (ZeroGradient)."""

    def get_gradient_defs(self):
        return self.single_gradient_def(
            "BPRLossGradient", "", [self.O(1), self.GO(0), self.GO(1)], [self.GI(0), self.GI(1)]
        )


register_schema(
    OpSchema(
        "SparseSGD",
        num_inputs=3,
        num_outputs=1,
        inputs=[
            ("param", "Table updated in place."),
            ("indices", "Rows of the sparse gradient (repeats add up)."),
            ("values", "Gradient rows, one per index."),
        ],
        outputs=[("param", "The same blob as input 0.")],
        args=[Argument("lr", float, default=0.1, doc="Learning rate.")],
        enforce_inplace=[(0, 0)],
        doc="param[indices] -= lr * values, in place (a GradientSlice step of plain SGD).",
    )
)


@_register_everywhere("SparseSGD")
class SparseSGDOp(_NumPyOperator):
    """``param[indices] -= lr * values`` (repeated indices accumulate)."""

    def run_on_device(self):
        param, indices, values = self.host_input(0), self.host_input(1).reshape(-1), self.host_input(2)
        _check_rows(self.type, param, "param", indices)
        if values.shape != (len(indices),) + param.shape[1:]:
            raise ValueError(
                f"{self.type}: values must have shape {(len(indices),) + param.shape[1:]}, got {values.shape}"
            )
        # On the CPU param is the blob itself; on a device it is a host copy, stored back after.
        np.subtract.at(param, indices, (self.arg("lr") * values).astype(param.dtype, copy=False))
        if not isinstance(self.input(0), np.ndarray):
            self.put(0, param)


should_not_do_gradient("SparseSGD")
