# SPDX-License-Identifier: BSD-3-Clause
"""Thread-count bounds and fork safety of the CPU kernels (issue 10, items 1 and 2).

Each scenario that could crash or hang runs in a subprocess with a timeout,
so a regression fails the test instead of killing or blocking the suite.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import caffe2op
from caffe2op import _config
from caffe2op._cpu import _runtime

needs_openmp = pytest.mark.skipif(not _runtime.openmp_enabled(), reason="a serial build has no thread pool")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")


def _run(script, timeout=120, **env):
    """Run ``script`` in a fresh interpreter; fail (instead of hanging) past ``timeout`` seconds."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, **env),
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the script hung for {timeout} s: {err.stdout!r} {err.stderr!r}")
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out


@pytest.mark.parametrize("n", [0, -1, 100_000, 2**31 - 1, 2**40, 10**6])
def test_set_num_threads_rejects_counts_outside_the_range(n):
    caffe2op.set_num_threads(2)
    with pytest.raises(ValueError, match=f"n must be between 1 and {_config.MAX_NUM_THREADS}, got {n}"):
        caffe2op.set_num_threads(n)
    try:
        assert caffe2op.get_num_threads() == (2 if _runtime.openmp_enabled() else 1)  # unchanged
    finally:
        caffe2op.set_num_threads(None)


def test_upper_bound_is_at_least_256_and_the_core_count():
    assert _config.MAX_NUM_THREADS == max(256, _config._usable_cpus())
    caffe2op.set_num_threads(_config.MAX_NUM_THREADS)  # the bound itself is accepted
    try:
        assert caffe2op.get_num_threads() == (_config.MAX_NUM_THREADS if _runtime.openmp_enabled() else 1)
    finally:
        caffe2op.set_num_threads(None)


@needs_openmp
def test_huge_omp_num_threads_is_clamped_and_kernels_run():
    out = _run(
        """
        import warnings
        warnings.simplefilter("always")
        import numpy as np, caffe2op
        from caffe2op import _config
        from caffe2op._cpu import _runtime
        assert caffe2op.get_num_threads() == _config.MAX_NUM_THREADS, caffe2op.get_num_threads()
        assert _runtime.omp_max_threads() == _config.MAX_NUM_THREADS  # OpenMP's own default too
        w = np.ones((40_000, 16), np.float32)
        caffe2op.sparse_normalize(w, np.arange(40_000), norm=1.0)
        assert np.allclose(w, 0.25)
        bits = np.zeros(1 << 20, np.uint16)
        out = np.empty(bits.size, np.float32)
        _runtime.half_to_float(bits, out)  # a region without an explicit team size
        print("ok")
        """,
        OMP_NUM_THREADS="100000",
    )
    assert "ok" in out.stdout
    assert "OMP_NUM_THREADS=100000 is above the supported maximum" in out.stderr


FORK_SCRIPT = """
import multiprocessing, os, sys, time
import numpy as np
import caffe2op

def work(seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((200_000, 64)).astype(np.float32)
    expected = table.copy()
    caffe2op.set_num_threads(1)
    caffe2op.sparse_normalize(expected, np.arange(len(table)), norm=1.0)
    caffe2op.set_num_threads(None)
    caffe2op.sparse_normalize(table, np.arange(len(table)), norm=1.0)
    y = caffe2op.stop_gradient(np.ones(1 << 21))
    return bool(np.array_equal(table, expected) and y.sum() == 1 << 21)

caffe2op.set_num_threads(2)
assert work(0)  # the parent runs multi-threaded kernels first

pid = os.fork()
if pid == 0:
    os._exit(0 if work(1) and caffe2op.get_num_threads() == 1 else 3)
deadline = time.monotonic() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        sys.exit("the forked child hung")
    time.sleep(0.05)
assert os.waitstatus_to_exitcode(status) == 0, status

with multiprocessing.get_context("fork").Pool(4) as pool:
    assert all(pool.map_async(work, range(4)).get(timeout=90))
assert work(2)  # the parent keeps its threads
print("fork ok")
"""


@needs_fork
def test_fork_after_a_parallel_kernel_does_not_hang():
    out = _run(FORK_SCRIPT, timeout=240)
    assert "fork ok" in out.stdout


@needs_fork
def test_forked_child_reports_serial_kernels():
    out = _run(
        """
        import io, os, caffe2op
        pid = os.fork()
        if pid == 0:
            text = io.StringIO()
            caffe2op.show_config(file=text)
            os._exit(0 if "serial in this forked child" in text.getvalue() and caffe2op.get_num_threads() == 1 else 5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        print("ok")
        """
    )
    assert "ok" in out.stdout


@needs_fork
def test_set_num_threads_in_a_forked_child_stays_serial():
    out = _run(
        """
        import os, numpy as np, caffe2op
        caffe2op.set_num_threads(2)
        caffe2op.sparse_normalize(np.ones((100_000, 8)), np.arange(100_000))
        pid = os.fork()
        if pid == 0:
            caffe2op.set_num_threads(2)
            w = np.ones((100_000, 8))
            caffe2op.sparse_normalize(w, np.arange(100_000))
            os._exit(0 if caffe2op.get_num_threads() == 1 and np.allclose(w, 8 ** -0.5) else 4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        print("ok")
        """,
        timeout=60,
    )
    assert "ok" in out.stdout
