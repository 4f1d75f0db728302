# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2-style operator tests through caffe2op.compat.hypothesis_test_util.

Modelled on Caffe2's ``operator_test/sparse_normalize_test.py`` and
``operator_test/normalize_op_test.py``: the references (row norms plus
1e-12; ``X / max(||X||, 1e-12)`` along ``axis``) are theirs, the code ours.
"""

import copy
import functools

import hypothesis
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffe2op.compat import core
from caffe2op.compat import hypothesis_test_util as hu

CASE = hu.HypothesisTestCase()


def ref_row(row, use_max_norm, norm):
    row_norm = np.linalg.norm(row) + 1e-12
    if (use_max_norm and row_norm > norm) or not use_max_norm:
        row = row * norm / row_norm
    return row


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(
    inputs=hu.tensors(n=2, min_dim=2, max_dim=2),
    use_max_norm=st.booleans(),
    norm=st.floats(min_value=1.0, max_value=4.0),
    data=st.data(),
    **hu.gcs,
)
def test_sparse_normalize_against_caffe2s_reference(inputs, use_max_norm, norm, data, gc, dc):
    param, grad = inputs
    param += 0.02 * np.sign(param)
    param[param == 0.0] += 0.02
    indices = data.draw(
        hu.tensor(dtype=np.int64, min_dim=1, max_dim=1, elements=st.sampled_from(np.arange(grad.shape[0])))
    )
    hypothesis.assume(np.array_equal(np.unique(indices), np.sort(indices)))
    op = core.CreateOperator(
        "SparseNormalize", ["param", "indices", "grad"], ["param"], use_max_norm=use_max_norm, norm=norm
    )

    def reference(param, indices, grad):
        out = np.copy(param)
        for index in indices:
            out[index] = ref_row(param[index], use_max_norm, norm)
        return (out,)

    CASE.assertReferenceChecks(gc, op, [param, indices, grad[indices]], reference)
    CASE.assertDeviceChecks(dc, op, [param, indices, grad[indices]], [0])


@settings(max_examples=10, deadline=None)
@given(X=hu.tensor(min_dim=1, max_dim=4, max_value=4, elements=hu.floats(min_value=0.5, max_value=1.0)), **hu.gcs)
def test_normalize_against_caffe2s_reference_devices_and_gradient(X, gc, dc):
    def reference(X, axis):
        return (X / np.maximum(np.sqrt((X**2).sum(axis=axis, keepdims=True)), 1e-12),)

    for axis in range(-X.ndim, X.ndim):
        op = core.CreateOperator("Normalize", "X", "Y", axis=axis)
        CASE.assertReferenceChecks(gc, op, [copy.copy(X)], functools.partial(reference, axis=axis))
        CASE.assertDeviceChecks(dc, op, [X], [0])
        CASE.assertGradientChecks(gc, op, [X], 0, [0])


def test_the_checks_can_fail():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    op = core.CreateOperator("Normalize", "X", "Y", axis=1)
    with pytest.raises(AssertionError, match="differs from the reference"):
        CASE.assertReferenceChecks(hu.cpu_do, op, [x], lambda X: (X,))

    @core.GradientRegistry.RegisterGradient("HuWrongScale")
    def wrong(op, g_output):  # the gradient of 2x is 2 dy, not dy
        return core.CreateOperator("StopGradient", g_output[0], "X_grad"), ["X_grad"]

    from caffe2op import Operator, register_cpu_operator

    @register_cpu_operator("HuWrongScale")
    class Scale(Operator):
        def run_on_device(self):
            self.set_output(0, 2 * self.input(0))

    CASE.assertReferenceChecks(hu.cpu_do, core.CreateOperator("HuWrongScale", "X", "Y"), [x], lambda X: (2 * X,))
    with pytest.raises(AssertionError, match="differs from finite differences"):
        CASE.assertGradientChecks(hu.cpu_do, core.CreateOperator("HuWrongScale", "X", "Y"), [x], 0, [0])


# --- assertReferenceChecks(grad_reference=...) ------------------------------------------------------


def _normalize_grad_reference(axis):
    """Caffe2's NormalizeGradient formula: with n = max(||x||, 1e-12), dx = dy / n - x <x, dy> / n^3."""

    def reference(output_grad, reference_outputs, inputs):
        (x,) = inputs
        x = x.astype(np.float64)
        dy = output_grad.astype(np.float64)
        n = np.maximum(np.sqrt((x * x).sum(axis=axis, keepdims=True)), 1e-12)
        return [dy / n - x * (x * dy).sum(axis=axis, keepdims=True) / n**3]

    return reference


@pytest.mark.parametrize("axis", [0, 1])
def test_grad_reference_checks_the_gradient_operators(axis):
    x = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    op = core.CreateOperator("Normalize", ["X"], ["Y"], axis=axis)
    reference = functools.partial(lambda a, X: (X / np.maximum(np.linalg.norm(X, axis=a, keepdims=True), 1e-12),), axis)
    CASE.assertReferenceChecks(
        hu.cpu_do, op, [x], reference, output_to_grad="Y", grad_reference=_normalize_grad_reference(axis)
    )


def test_grad_reference_that_disagrees_fails():
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    op = core.CreateOperator("Normalize", ["X"], ["Y"], axis=1)
    right = _normalize_grad_reference(1)

    def wrong(output_grad, reference_outputs, inputs):
        return [2 * right(output_grad, reference_outputs, inputs)[0] + 0.1]

    with pytest.raises(AssertionError, match="gradient 'X_grad' differs"):
        CASE.assertReferenceChecks(
            hu.cpu_do, op, [x], lambda X: (X / np.linalg.norm(X, axis=1, keepdims=True),),
            output_to_grad="Y", grad_reference=wrong,
        )  # fmt: skip


def test_grad_reference_none_for_an_input_without_gradient():
    import caffe2op.examples.embedding_demo  # noqa: F401  (registers EmbeddingLookup: no gradient for ids)

    table, ids = np.ones((3, 2), np.float32), np.array([1], np.int64)
    op = core.CreateOperator("EmbeddingLookup", ["T", "ids"], ["rows"])
    with pytest.raises(AssertionError, match="input 'ids' has no gradient"):
        CASE.assertReferenceChecks(
            hu.cpu_do, op, [table, ids], lambda T, i: (T[i],), output_to_grad="rows",
            grad_reference=lambda g, r, i: [(g, i[1]), np.zeros(1)],
        )  # fmt: skip
    with pytest.raises(AssertionError, match="returned 1 gradients for 2 inputs"):
        CASE.assertReferenceChecks(
            hu.cpu_do, op, [table, ids], lambda T, i: (T[i],), output_to_grad="rows",
            grad_reference=lambda g, r, i: [(g, i[1])],
        )  # fmt: skip


def test_grad_reference_needs_output_to_grad():
    op = core.CreateOperator("Normalize", ["X"], ["Y"])
    with pytest.raises(ValueError, match="output_to_grad"):
        CASE.assertReferenceChecks(
            hu.cpu_do,
            op,
            [np.ones((2, 2), np.float32)],
            lambda X: (X / np.sqrt(2),),
            grad_reference=lambda g, r, i: [g],
        )


def test_grad_reference_for_a_sparse_gradient():
    import caffe2op.examples.embedding_demo  # noqa: F401  (registers EmbeddingLookup: a GradientSlice gradient)

    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([2, 0, 3], dtype=np.int64)
    op = core.CreateOperator("EmbeddingLookup", ["T", "ids"], ["rows"])

    def grad_reference(output_grad, reference_outputs, inputs):
        return [(output_grad, inputs[1]), None]

    CASE.assertReferenceChecks(
        hu.cpu_do, op, [table, ids], lambda T, i: (T[i],), output_to_grad="rows", grad_reference=grad_reference
    )
    with pytest.raises(AssertionError, match="indices"):
        CASE.assertReferenceChecks(
            hu.cpu_do, op, [table, ids], lambda T, i: (T[i],), output_to_grad="rows",
            grad_reference=lambda g, r, i: [(g, i[1][::-1]), None],
        )  # fmt: skip
