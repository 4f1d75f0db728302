# SPDX-License-Identifier: BSD-3-Clause
"""DistributedDataParallel (gloo, 2 processes on 127.0.0.1): the constraint keeps the replicas bit-identical."""

import socket

from tests.torch._torch import import_torch

torch = import_torch()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, results):
    import caffe2op
    from caffe2op.torch import RowNormConstraint

    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        caffe2op.set_num_threads(1 + rank)  # different thread counts: results must not depend on them
        for sparse in (False, True):
            if not _train(rank, world, sparse, dist, RowNormConstraint):
                results.put((rank, f"replicas differ or a row is too long (sparse={sparse})"))
                return
        results.put((rank, True))
    finally:
        dist.destroy_process_group()


def _train(rank, world, sparse, dist, RowNormConstraint):
    """Four DDP steps with the constraint; whether every replica matched and every touched row is short."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(200, 16, sparse=sparse)
    with torch.no_grad():
        emb.weight.mul_(2)
    model = torch.nn.parallel.DistributedDataParallel(emb)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    constraint = RowNormConstraint(emb, norm=1.0)
    constraint.attach(opt)
    g = torch.Generator().manual_seed(100 + rank)  # every rank looks up other rows
    for _ in range(4):
        idx = torch.randint(0, 200, (8, 5), generator=g)
        opt.zero_grad()
        model(idx).pow(2).sum().backward()
        opt.step()
        weights = [torch.empty_like(emb.weight) for _ in range(world)]
        dist.all_gather(weights, emb.weight.detach().contiguous())
        seen = [torch.empty_like(idx) for _ in range(world)]
        dist.all_gather(seen, idx)
        rows = torch.cat(seen).unique()
        ok = all(torch.equal(w, weights[0]) for w in weights)
        ok = ok and bool((emb.weight.detach()[rows].norm(dim=1) <= 1.0 + 1e-6).all())
        if not ok:
            return False
    return True


def test_ddp_replicas_stay_bit_identical():
    """Dense gradients (rows from the forward pre-hook) and sparse ones (rows from the gradient), one process group."""
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, 2, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcome = dict(results.get(timeout=5) for _ in procs)
    assert outcome == {0: True, 1: True} and all(p.exitcode == 0 for p in procs)
