# SPDX-License-Identifier: BSD-3-Clause
"""The torch.library operators: opcheck, autograd against NormalizeGradient, torch.compile without graph breaks."""

import numpy as np
import pytest

import caffe2op
from tests.torch._torch import import_torch

torch = import_torch()
import caffe2op.torch  # noqa: E402,F401  (registers torch.ops.caffe2op)


def _table():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 6, generator=g, dtype=torch.float64) * 2


def test_every_operator_is_registered():
    for name in caffe2op.torch.OPERATORS:
        assert hasattr(torch.ops.caffe2op, name)


@pytest.mark.parametrize(
    "op, args",
    [
        ("sparse_normalize_", lambda: (_table(), torch.tensor([1, 3, 1]), True, 1.0)),
        ("sparse_normalize_", lambda: (_table().float(), torch.tensor([0, 19], dtype=torch.int32), False, 2.0)),
        ("embedding_renorm_", lambda: (_table(), torch.tensor([2, 5, 2]), 1.0, 2.0)),
        ("normalize", lambda: (_table().requires_grad_(), 1)),
        ("normalize", lambda: (_table().reshape(4, 5, 6).requires_grad_(), 0)),
        ("normalize_backward", lambda: (_table(), _table(), -1)),
        ("stop_gradient", lambda: (_table().requires_grad_(),)),
    ],
)
def test_opcheck(op, args):
    torch.library.opcheck(getattr(torch.ops.caffe2op, op).default, args())


def test_sparse_normalize_op_matches_the_functional_form():
    table = _table()
    expected = caffe2op.sparse_normalize(table.numpy().copy(), [1, 3], norm=1.0)
    torch.ops.caffe2op.sparse_normalize_(table, torch.tensor([1, 3]), True, 1.0)
    assert np.array_equal(table.numpy(), expected)


def test_normalize_gradient_is_normalize_gradient():
    x = _table().requires_grad_()
    dy = torch.randn(20, 6, dtype=torch.float64)
    y = torch.ops.caffe2op.normalize(x, 1)
    y.backward(dy)
    gradient = caffe2op.ops.normalize.dense.normalize_gradient_dense
    expected = gradient("NormalizeGradient", x.detach().numpy(), dy.numpy(), 1)
    assert np.array_equal(x.grad.numpy(), expected)
    # and it is the derivative of x / ||x||
    assert torch.autograd.gradcheck(lambda t: torch.ops.caffe2op.normalize(t, 1), (_table().requires_grad_(),))


def test_stop_gradient_output_needs_no_grad():
    x = _table().requires_grad_()
    y = torch.ops.caffe2op.stop_gradient(x)
    assert not y.requires_grad and torch.equal(y, x.detach())
    loss = (x * 2).sum() + (y * 3).sum()
    loss.backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend=backend)
    def step(table, rows, x):
        torch.ops.caffe2op.sparse_normalize_(table, rows, True, 1.0)
        y = torch.ops.caffe2op.normalize(x, -1)
        return torch.ops.caffe2op.stop_gradient(y) + table[rows].sum()

    table, rows, x = _table(), torch.tensor([0, 4, 4]), _table()
    eager_table = table.clone()
    torch.ops.caffe2op.sparse_normalize_(eager_table, rows, True, 1.0)
    expected = torch.ops.caffe2op.normalize(x, -1) + eager_table[rows].sum()
    result = step(table, rows, x)
    assert torch.equal(table, eager_table)
    torch.testing.assert_close(result, expected)


def test_compile_normalize_backward():
    torch._dynamo.reset()
    fn = torch.compile(lambda t: torch.ops.caffe2op.normalize(t, 0).pow(2).sum(), fullgraph=True, backend="aot_eager")
    x = _table().requires_grad_()
    fn(x).backward()
    y = _table().requires_grad_()
    torch.ops.caffe2op.normalize(y, 0).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)
