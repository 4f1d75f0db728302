# SPDX-License-Identifier: BSD-3-Clause
"""The PyTorch example runs, learns, and keeps the touched rows within the norm."""

from tests.torch._torch import import_torch

import_torch()


def test_torch_embedding_example(capsys):
    from caffe2op.examples import torch_embedding

    losses, norms = torch_embedding.train(rows=2_000, steps=15, batch=128)
    assert losses[-1] < losses[0]
    assert max(norms) <= 1.0 + 1e-6
    assert torch_embedding.main(["--steps", "2"]) == 0
    assert "largest touched-row norm" in capsys.readouterr().out
