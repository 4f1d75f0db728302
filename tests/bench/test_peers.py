# SPDX-License-Identifier: BSD-3-Clause
"""The numba peers of ``caffe2op bench`` compute the same results as caffe2op (skipped without numba)."""

import numpy as np
import pytest

import caffe2op
from caffe2op.bench import peers
from caffe2op.bench.inputs import embedding_table, indices_with_duplicates

numba = pytest.importorskip("numba", reason="numba is a benchmark peer (the bench extra), not a test dependency")


@pytest.mark.parametrize("use_max_norm", [True, False])
def test_numba_sparse_normalize(use_max_norm):
    rng = np.random.default_rng(5)
    table = embedding_table(1_000, 12, np.float32, rng)
    indices = indices_with_duplicates(1_000, 300, 0.4, rng)
    expected = caffe2op.sparse_normalize(table.copy(), indices, use_max_norm=use_max_norm, norm=1.0)
    got = peers.numba_sparse_normalize(table.copy(), indices, use_max_norm, 1.0, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_numba_normalize_dense_and_csr(axis):
    sp = pytest.importorskip("scipy.sparse", reason="scipy is needed for the CSR peer")
    rng = np.random.default_rng(6)
    dense = rng.standard_normal((70, 150)).astype(np.float32)  # more columns than one block of 64
    np.testing.assert_allclose(peers.numba_normalize(dense, axis, 2), caffe2op.normalize(dense, axis=axis), rtol=1e-5)
    matrix = sp.random(60, 40, density=0.2, format="csr", dtype=np.float32, random_state=7)
    got = peers.numba_csr_normalize(matrix, axis, 2).toarray()
    np.testing.assert_allclose(got, caffe2op.normalize(matrix, axis=axis).toarray(), rtol=1e-5, atol=1e-7)


def test_numba_copy():
    src = np.arange(1_000, dtype=np.float32)
    assert np.array_equal(peers.numba_copy(np.empty_like(src), src, 2), src)
