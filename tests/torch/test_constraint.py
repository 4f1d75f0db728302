# SPDX-License-Identifier: BSD-3-Clause
"""RowNormConstraint: touched rows only, sparse and dense gradients, the failing programs of pytorch#26596/#28959."""

import numpy as np
import pytest

import caffe2op
from tests.torch._torch import import_torch

torch = import_torch()
from caffe2op.torch import RowNormConstraint  # noqa: E402


def _norms(weight):
    return weight.detach().norm(dim=1)


@pytest.mark.parametrize("use_max_norm", [True, False])
def test_sparse_gradient_rows_are_renormalised_exactly_as_sparse_normalize(use_max_norm):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8, sparse=True)
    with torch.no_grad():
        emb.weight.mul_(3)
    plain = torch.nn.Embedding(50, 8, sparse=True)
    plain.load_state_dict(emb.state_dict())
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    RowNormConstraint(emb, norm=1.0, use_max_norm=use_max_norm).attach(opt)
    idx = torch.tensor([[3, 7], [7, 11]])
    before = emb.weight.detach().clone()
    for module, optimizer in ((emb, opt), (plain, plain_opt)):
        module(idx).pow(2).sum().backward()
        optimizer.step()
    expected = caffe2op.sparse_normalize(plain.weight.detach().numpy(), idx.numpy(), use_max_norm=use_max_norm)
    assert np.array_equal(emb.weight.detach().numpy(), expected)
    untouched = [r for r in range(50) if r not in (3, 7, 11)]
    assert torch.equal(emb.weight.detach()[untouched], before[untouched])


def test_dense_gradient_rows_come_from_the_forward_passes():
    torch.manual_seed(1)
    emb = torch.nn.Embedding(30, 4)
    with torch.no_grad():
        emb.weight.mul_(3)
    opt = torch.optim.SGD(emb.parameters(), lr=0.01)
    constraint = RowNormConstraint(emb, norm=1.0, use_max_norm=False)
    constraint.attach(opt)
    (emb(torch.tensor([1, 2])).sum() + emb(torch.tensor([[5]])).sum()).backward()
    opt.step()
    norms = _norms(emb.weight)
    torch.testing.assert_close(norms[[1, 2, 5]], torch.ones(3))
    assert (norms[[0, 3, 4]] > 2).all()  # untouched rows kept their norms
    assert constraint.touched_rows().numel() == 0  # the lookups were consumed by the step
    constraint.remove()
    emb(torch.tensor([0])).sum().backward()
    opt.step()
    assert _norms(emb.weight)[0] > 2


def test_pytorch_26596_rewritten_with_the_constraint():
    """Weight used directly and through a lookup in one graph: max_norm= raised in backward; this runs."""
    torch.manual_seed(0)
    n, d, m = 3, 5, 7
    embedding = torch.nn.Embedding(n, d)
    with torch.no_grad():
        embedding.weight.mul_(4)
    W = torch.randn((m, d), requires_grad=True)
    optimizer = torch.optim.Adam(list(embedding.parameters()) + [W], lr=1e-3)
    RowNormConstraint(embedding, norm=1.0).attach(optimizer)
    optimizer.zero_grad()
    idx = torch.tensor([1, 2])
    a = embedding.weight @ W.t()  # Line a
    b = embedding(idx) @ W.t()  # Line b
    out = a.unsqueeze(0) + b.unsqueeze(1)
    loss = out.sigmoid().prod()
    loss.backward()
    optimizer.step()
    norms = _norms(embedding.weight)
    assert (norms[[1, 2]] <= 1.0 + 1e-6).all() and norms[[1, 2]].max() > 0.99
    assert norms[0] > 2  # not looked up: not constrained


def test_pytorch_28959_rewritten_with_the_constraint():
    """A lookup whose batch repeats rows: max_norm= raised "leaf variable has been moved into the graph interior"."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    class SampleModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Embedding(500, 10), torch.nn.Linear(10, 2))
            self.loss_criterion = torch.nn.NLLLoss()

        def forward(self, inputs, labels):
            em_x = self.layers[0](inputs).sum(1)
            return self.loss_criterion(self.layers[1](em_x), labels)

    model = SampleModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    RowNormConstraint(model.layers[0], norm=1.0).attach(optimizer)
    inputs = torch.from_numpy(rng.integers(0, 20, size=(500, 30)))
    labels = torch.tensor([0] * 250 + [1] * 250)
    for _ in range(3):
        optimizer.zero_grad()
        model(inputs, labels).backward()
        optimizer.step()
        norms = _norms(model.layers[0].weight)
        assert (norms[:20] <= 1.0 + 1e-6).all()
        assert torch.equal(norms[20:], _norms(model.layers[0].weight)[20:])


def test_bare_weight_and_explicit_rows():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], requires_grad=True)
    constraint = RowNormConstraint(w, norm=1.0)
    w.grad = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(constraint.touched_rows(), torch.tensor([1, 2]))
    constraint.apply()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.6, 0.8]]))
    with pytest.raises(IndexError):
        constraint.apply(torch.tensor([5]))


def test_constructor_checks():
    with pytest.raises(TypeError):
        RowNormConstraint([1.0])
    with pytest.raises(TypeError):
        RowNormConstraint(torch.nn.ReLU())
    with pytest.raises(ValueError):
        RowNormConstraint(torch.ones(3))
    with pytest.raises(ValueError):
        RowNormConstraint(torch.ones((3, 2)), norm=-1.0)
    with pytest.raises(TypeError, match="bfloat16"):
        RowNormConstraint(torch.ones((3, 2), dtype=torch.bfloat16))


def test_compiled_training_step_without_graph_breaks():
    torch.manual_seed(0)
    torch._dynamo.reset()
    emb = torch.nn.Embedding(40, 6)
    with torch.no_grad():
        emb.weight.mul_(3)
    reference = torch.nn.Embedding(40, 6)
    reference.load_state_dict(emb.state_dict())
    constraint = RowNormConstraint(emb, norm=1.0)

    @torch._dynamo.config.patch(trace_autograd_ops=True)  # torch.autograd.grad inside the graph
    @torch.compile(fullgraph=True, backend="aot_eager")
    def train_step(idx, lr):
        loss = emb(idx).pow(2).sum()  # the pre-hook records idx inside the graph
        (grad,) = torch.autograd.grad(loss, [emb.weight])
        with torch.no_grad():
            emb.weight.sub_(lr * grad)
        constraint.apply()  # torch.ops.caffe2op.sparse_normalize_ in the graph
        return loss.detach()

    idx = torch.tensor([2, 9, 2, 30])
    train_step(idx, 0.1)
    loss = reference(idx).pow(2).sum()
    loss.backward()
    with torch.no_grad():
        reference.weight.sub_(0.1 * reference.weight.grad)
        caffe2op.sparse_normalize(reference.weight, idx)
    torch.testing.assert_close(emb.weight.detach(), reference.weight.detach())
    assert (_norms(emb.weight)[[2, 9, 30]] <= 1.0 + 1e-6).all()
