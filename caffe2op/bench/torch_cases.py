# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark group ``torch``: caffe2op.torch against PyTorch's own max-norm machinery.

* ``caffe2op.torch.embedding_renorm_`` against ``torch.embedding_renorm_``
  (same arithmetic, element for element) on a 1,000,000 x 64 float32 table
  with 100,000 indices, 2 threads;
* a whole training step of a 1,000,000 x 64 ``nn.Embedding(sparse=True)``
  (SGD, a batch of 4,096 lookups): with ``max_norm=1.0`` (renormalising in
  the forward pass with ``torch.embedding_renorm_``) and with
  :class:`caffe2op.torch.RowNormConstraint` (after the step), and each
  step's renormalisation alone, for its share of the step.

The group is absent when torch is not installed.
"""

import numpy as np

from .timing import OURS, PEER, Case, Contender, Target

SEED = 20261130
ROWS, WIDTH = 1_000_000, 64


def _table(rng):
    table = rng.standard_normal((ROWS, WIDTH), dtype=np.float32)
    table *= (rng.uniform(0.5, 1.5, (ROWS, 1)) / np.sqrt(WIDTH)).astype(np.float32)
    return table


def torch_cases(quick):
    """The ``torch`` group (nothing without torch)."""
    try:
        import torch

        import caffe2op.torch as ct
    except ImportError:
        return
    rng = np.random.default_rng(SEED)
    table = _table(rng)
    indices = torch.from_numpy(rng.integers(0, ROWS, 100_000))

    def torch_prepare():
        torch.set_num_threads(1)  # a serial loop; more threads only spin (see peers.torch_renorm_prepare)
        return torch.from_numpy(table.copy())

    for threads in (1, 2):
        yield _renorm_case(torch, ct, table, indices, torch_prepare, threads)
    yield from _training_step_cases(torch, ct, table, rng)


def _renorm_case(torch, ct, table, indices, torch_prepare, threads):
    renorm = Case(
        "torch",
        "embedding_renorm_ drop-in: 1,000,000 x 64 float32, 100,000 indices, max_norm 1",
        [
            Contender(
                "caffe2op",
                lambda w: ct.embedding_renorm_(w, indices, 1.0),
                torch_prepare,
                OURS,
                result=lambda w, _: w.numpy(),
            ),
            Contender(
                "torch.embedding_renorm_",
                lambda w: torch.embedding_renorm_(w, indices, 1.0, 2.0),
                torch_prepare,
                PEER,
                result=lambda w, _: w.numpy(),
                note="serial loop, 1 thread",
            ),
        ],
        reference=lambda: torch.embedding_renorm_(torch.from_numpy(table.copy()), indices, 1.0, 2.0).numpy(),
        rtol=0.0,
        atol=0.0,  # the same arithmetic: bit for bit
        threads=threads,
        params=dict(rows=ROWS, width=WIDTH, indices=100_000),
    )
    if threads == 2:
        renorm.targets = [Target("torch.embedding_renorm_", 20.0)]
    return renorm


def _training_step_cases(torch, ct, table, rng):
    batch = torch.from_numpy(rng.integers(0, ROWS, 4096))
    target = torch.from_numpy(rng.standard_normal((4096, WIDTH), dtype=np.float32))

    def model(max_norm, constraint):
        emb = torch.nn.Embedding(ROWS, WIDTH, sparse=True, max_norm=max_norm, _weight=torch.from_numpy(table.copy()))
        opt = torch.optim.SGD(emb.parameters(), lr=0.1)
        if constraint:
            ct.RowNormConstraint(emb, norm=1.0).attach(opt)
        return emb, opt

    def step(state):
        emb, opt = state
        opt.zero_grad()
        torch.nn.functional.mse_loss(emb(batch), target).backward()
        opt.step()
        return emb.weight.detach()

    def prepare(max_norm=None, constraint=False):
        torch.set_num_threads(1)
        return model(max_norm, constraint)

    for threads in (1, 2):
        yield from _step_cases(torch, step, prepare, table, batch, ct, threads)


def _step_cases(torch, step, prepare, table, batch, ct, threads):
    yield Case(
        "torch",
        "training step: nn.Embedding 1,000,000 x 64 sparse SGD, 4,096 lookups, max_norm=1.0 vs RowNormConstraint",
        [
            Contender(
                "caffe2op",
                step,
                lambda: prepare(constraint=True),
                OURS,
                note="RowNormConstraint(norm=1.0) after the step",
            ),
            Contender(
                "nn.Embedding(max_norm=1.0)",
                step,
                lambda: prepare(max_norm=1.0),
                PEER,
                note="embedding_renorm_ in the forward pass",
            ),
        ],
        threads=threads,
        params=dict(rows=ROWS, width=WIDTH, batch=4096),
    )
    rows = batch.clone()
    yield Case(
        "torch",
        "renormalising one step's 4,096 rows (the part of each step above)",
        [
            Contender(
                "caffe2op",
                lambda w: ct.RowNormConstraint(w, norm=1.0).apply(rows),
                lambda: torch.from_numpy(table.copy()),
                OURS,
                note="SparseNormalize, eps 1e-12",
            ),
            Contender(
                "torch.embedding_renorm_",
                lambda w: torch.embedding_renorm_(w, rows, 1.0, 2.0),
                lambda: (torch.set_num_threads(1), torch.from_numpy(table.copy()))[1],
                PEER,
                note="eps 1e-7",
            ),
        ],
        threads=threads,
        params=dict(rows=ROWS, width=WIDTH, indices=4096),
    )
