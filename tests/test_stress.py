# SPDX-License-Identifier: BSD-3-Clause
"""Stress tests that run in seconds (issue 10, "a standing defence"): threads, shared workspace, leaks.

Fork after use is covered by ``tests/test_threads_and_fork.py``.
"""

import gc
import threading

import numpy as np
import pytest

import caffe2op
from tests._reference import sparse_normalize_ref

N_THREADS = 8
# The kernel sums in a different order than the reference: a few ulps (float16: one rounding step).
RTOL = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}


def _run_threads(target, n=N_THREADS):
    """Run ``target(i)`` in ``n`` threads started together; re-raise the first error; fail on a hang."""
    errors = []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as err:  # reported to the test below
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_threads_on_separate_tables_match_the_reference(dtype):
    caffe2op.set_num_threads(2)  # every call may open its own parallel region
    try:

        def work(i):
            rng = np.random.default_rng(i)
            table = (rng.standard_normal((4000, 32)) * 2).astype(dtype)
            x = rng.standard_normal(1 << 19)  # above StopGradient's parallel size
            for _ in range(10):
                indices = rng.integers(0, len(table), 3000)
                expected = sparse_normalize_ref(table, indices, use_max_norm=False, norm=1.5)
                caffe2op.sparse_normalize(table, indices, use_max_norm=False, norm=1.5)
                np.testing.assert_allclose(table.astype(np.float64), expected.astype(np.float64), rtol=RTOL[dtype])
                np.testing.assert_array_equal(caffe2op.stop_gradient(x), x)

        _run_threads(work)
    finally:
        caffe2op.set_num_threads(None)


def test_threads_on_one_shared_workspace():
    ws = caffe2op.Workspace()
    expected = {}
    for i in range(N_THREADS):
        rng = np.random.default_rng(100 + i)
        table = rng.standard_normal((2000, 16)) * 3
        indices = rng.integers(0, 2000, 500)
        ws.feed_blob(f"w{i}", table)
        ws.feed_blob(f"idx{i}", indices)
        expected[i] = sparse_normalize_ref(sparse_normalize_ref(table, indices, True, 1.0), indices, True, 1.0)

    def work(i):
        normalise = caffe2op.create_operator("SparseNormalize", [f"w{i}", f"idx{i}"], [f"w{i}"])
        copy = caffe2op.create_operator("StopGradient", [f"w{i}"], [f"copy{i}"])
        for _ in range(2):
            ws.run_operator_once(normalise)
            ws.run_operator_once(copy)

    _run_threads(work)
    for i in range(N_THREADS):
        np.testing.assert_allclose(ws.fetch_blob(f"w{i}"), expected[i], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(ws.fetch_blob(f"copy{i}"), ws.fetch_blob(f"w{i}"))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="reads RSS from /proc (Linux)")
def test_many_small_calls_keep_memory_and_objects_flat():
    table = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32) * 3
    indices = np.array([1, 5, 9, 1])
    x = np.ones(16)

    def calls(n):
        for _ in range(n):
            caffe2op.sparse_normalize(table, indices, use_max_norm=False)
            caffe2op.stop_gradient(x)

    calls(10_000)  # warm up caches and allocator pools
    gc.collect()
    rss, objects = _rss_bytes(), len(gc.get_objects())
    calls(100_000)
    gc.collect()
    assert len(gc.get_objects()) - objects < 100
    assert _rss_bytes() - rss < 4 << 20, (rss, _rss_bytes())


def test_indices_written_by_another_thread_during_calls_never_escape_the_table():
    """The kernel reads each index once and checks it: a racing writer can cause IndexError, never a bad write."""
    table = np.ones((1000, 8), np.float32)
    guard = np.ones((1000, 8), np.float32)  # a neighbour allocation a stray write could hit
    indices = np.arange(200_000) % 1000
    stop = threading.Event()

    def scribble():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            positions = rng.integers(0, indices.size, 64)
            indices[positions] = rng.choice([-(2**62), 2**40, 10**6, 999, 0], 64)
            indices[positions] = positions % 1000

    writer = threading.Thread(target=scribble, daemon=True)
    writer.start()
    caffe2op.set_num_threads(2)
    try:
        for _ in range(200):
            try:
                caffe2op.sparse_normalize(table, indices, use_max_norm=False, norm=2.0)
            except IndexError:
                pass
    finally:
        stop.set()
        writer.join(timeout=30)
        caffe2op.set_num_threads(None)
    np.testing.assert_array_equal(guard, 1.0)
    selected = np.abs(np.linalg.norm(table, axis=1) - 2.0) < 1e-5
    assert np.array_equal(table[~selected], np.ones_like(table[~selected]))  # rows either normalised or untouched


def test_an_index_fixed_by_another_thread_after_the_kernel_saw_it_is_reported_as_such():
    """The kernel saw an index out of range; by the time the message is written it is valid again."""
    from caffe2op._validation import raise_first_bad_index

    with pytest.raises(IndexError, match=r"SparseNormalize: an index of indices was outside 0\.\.9 .*another thread"):
        raise_first_bad_index("SparseNormalize", "indices", np.arange(10), 10)
    with pytest.raises(IndexError, match="index 10 at position 3 of indices is out of range"):
        raise_first_bad_index("SparseNormalize", "indices", np.array([0, 1, 2, 10, -1]), 10)
