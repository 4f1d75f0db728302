# SPDX-License-Identifier: BSD-3-Clause
"""Train a sparse embedding in PyTorch with caffe2op's row-norm constraint.

Run it with ``python -m caffe2op.examples.torch_embedding``.

A bag-of-rows regression: each sample looks up a few rows of a table, their
sum predicts a target.  The table is an ``nn.Embedding(sparse=True)`` without
``max_norm=``; :class:`caffe2op.torch.RowNormConstraint` keeps every row the
optimizer touched at norm <= 1 after each step.
"""

import argparse

import torch

from caffe2op.torch import RowNormConstraint


def train(rows=10_000, width=16, steps=20, batch=256, seed=0):
    """Train for ``steps`` steps; return ``(losses, largest norm of a touched row after each step)``.

    Parameters
    ----------
    rows, width : int
        Table shape.
    steps, batch : int
        Number of SGD steps and samples per step.
    seed : int
        Seed of the data and the initial table.

    Returns
    -------
    tuple of list of float
        The loss and the largest norm among the rows the step touched, per step.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    emb = torch.nn.EmbeddingBag(rows, width, mode="sum", sparse=True)
    with torch.no_grad():
        emb.weight.mul_(2.0)
    head = torch.nn.Linear(width, 1)
    opt_sparse = torch.optim.SGD(emb.parameters(), lr=0.05)
    opt_dense = torch.optim.SGD(head.parameters(), lr=0.05)
    RowNormConstraint(emb, norm=1.0).attach(opt_sparse)
    truth = torch.randn(rows, generator=gen)
    losses, norms = [], []
    for _ in range(steps):
        indices = torch.randint(0, rows, (batch, 4), generator=gen)
        target = truth[indices].sum(dim=1, keepdim=True)
        opt_sparse.zero_grad()
        opt_dense.zero_grad()
        loss = torch.nn.functional.mse_loss(head(emb(indices)), target)
        loss.backward()
        opt_sparse.step()
        opt_dense.step()
        losses.append(loss.item())
        norms.append(emb.weight.detach()[indices.unique()].norm(dim=1).max().item())
    return losses, norms


def main(argv=None):
    """Run :func:`train` and print the loss and the largest touched-row norm per step.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``--steps N``).

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    losses, norms = train(steps=args.steps)
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True)):
        print(f"step {step:3d}  loss {loss:9.4f}  largest touched-row norm {norm:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
