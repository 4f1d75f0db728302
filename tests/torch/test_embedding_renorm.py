# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.torch.embedding_renorm_ against torch.embedding_renorm_, element for element."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from tests.torch._torch import import_torch

torch = import_torch()
import caffe2op.torch as ct  # noqa: E402

DTYPES = [torch.float16, torch.float32, torch.float64]
EXACT_P = [2.0, 1.0, math.inf, 0.0]


def _inputs(seed, rows, cols, n_indices, dtype, index_dtype=torch.int64):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, cols)) * rng.uniform(0.05, 4.0, (rows, 1))
    indices = rng.integers(0, rows, n_indices)
    return torch.from_numpy(table).to(dtype), torch.from_numpy(indices).to(index_dtype)


@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 300),
    cols=st.integers(1, 80),
    n_indices=st.integers(0, 400),
    dtype=st.sampled_from(DTYPES),
    p=st.sampled_from(EXACT_P),
    max_norm=st.sampled_from([0.0, 0.5, 1.0, 3.0, 40.0]),
    threads=st.sampled_from([1, 2, 3]),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
)
def test_equals_torch_element_for_element(seed, rows, cols, n_indices, dtype, p, max_norm, threads, index_dtype):
    table, indices = _inputs(seed, rows, cols, n_indices, dtype, index_dtype)
    expected, ours = table.clone(), table.clone()
    torch.embedding_renorm_(expected, indices, max_norm, p)
    caffe2op.set_num_threads(threads)
    assert ct.embedding_renorm_(ours, indices, max_norm, p) is ours
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_other_p_agrees_to_rounding(dtype):
    table, indices = _inputs(7, 200, 67, 300, dtype)
    expected, ours = table.clone(), table.clone()
    torch.embedding_renorm_(expected, indices, 1.0, 3.0)
    ct.embedding_renorm_(ours, indices, 1.0, 3.0)
    rtol = {torch.float16: 2e-3, torch.float32: 1e-6, torch.float64: 1e-14}[dtype]
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=0)


def test_large_table_with_threads_equals_torch():
    """Enough rows for the parallel loop, with duplicates; any thread count gives torch's bits."""
    table, indices = _inputs(3, 20_000, 64, 30_000, torch.float32)
    expected = table.clone()
    torch.embedding_renorm_(expected, indices, 1.0, 2.0)
    for threads in (1, 2, 4):
        caffe2op.set_num_threads(threads)
        ours = table.clone()
        ct.embedding_renorm_(ours, indices, 1.0, 2.0)
        assert torch.equal(ours, expected)


def test_rejects_bad_input_and_leaves_the_table_alone():
    table, _ = _inputs(1, 10, 4, 0, torch.float32)
    before = table.clone()
    cases = [
        (IndexError, lambda: ct.embedding_renorm_(table, torch.tensor([0, -1]), 1.0)),  # torch would wrap
        (IndexError, lambda: ct.embedding_renorm_(table, torch.tensor([2, 10]), 1.0)),
        (TypeError, lambda: ct.embedding_renorm_(table, torch.tensor([0.0]), 1.0)),
        (ValueError, lambda: ct.embedding_renorm_(table, torch.tensor([0]), -1.0)),
        (ValueError, lambda: ct.embedding_renorm_(table, torch.tensor([0]), float("nan"))),
        (ValueError, lambda: ct.embedding_renorm_(table, torch.tensor([0]), 1.0, -2.0)),
        (TypeError, lambda: ct.embedding_renorm_(table, torch.tensor([0]), "1")),
        (ValueError, lambda: ct.embedding_renorm_(table.reshape(-1), torch.tensor([0]), 1.0)),
        (ValueError, lambda: ct.embedding_renorm_(table.t(), torch.tensor([0]), 1.0)),
        (TypeError, lambda: ct.embedding_renorm_(table.bfloat16(), torch.tensor([0]), 1.0)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
        assert torch.equal(table, before)
    leaf = table.clone().requires_grad_()
    with pytest.raises(ValueError, match="no_grad"):
        ct.embedding_renorm_(leaf, torch.tensor([0]), 0.1)
    with torch.no_grad():
        ct.embedding_renorm_(leaf, torch.tensor([0]), 0.1)
    assert leaf[0].norm().item() == pytest.approx(0.1, rel=1e-5)


def test_inside_torch_compile_fullgraph():
    table, indices = _inputs(5, 50, 8, 40, torch.float32)
    expected = table.clone()
    torch.embedding_renorm_(expected, indices, 1.0, 2.0)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def renorm(w, i):
        ct.embedding_renorm_(w, i, 1.0, 2.0)
        return w * 1

    ours = table.clone()
    assert torch.equal(renorm(ours, indices), expected) and torch.equal(ours, expected)
