# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL layer under forks, threads, caller-owned contexts and hostile input (issue 10's OpenCL cases)."""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest
import scipy.sparse as sp

import caffe2op
from caffe2op.devices import backend_for, parse_device

from .._helpers import assert_allclose_dtype, assert_bit_identical

pytestmark = pytest.mark.opencl

FORK_TIMEOUT_S = 60


def _name(device):
    return f"opencl:{device.device_id}"


# --- fork ------------------------------------------------------------------------------------


def _wait_or_kill(pid, timeout):
    """Exit status of child ``pid``, or None after killing it when it runs past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _child_opencl_report(device_name):
    """In a fork child: every functional OpenCL call on host data, checked against the CPU; a list of failures."""
    failures = []
    rng = np.random.default_rng(1)
    table = rng.standard_normal((300, 16)).astype(np.float32) * 3
    expected = table.copy()
    caffe2op.sparse_normalize(expected, [5, 7, 5, 250])  # CPU
    got = table.copy()
    caffe2op.sparse_normalize(got, [5, 7, 5, 250], device=device_name)
    if not np.allclose(got, expected, rtol=1e-6, atol=1e-7) or not np.array_equal(got[8:250], table[8:250]):
        failures.append("sparse_normalize")
    before = got.copy()
    try:
        caffe2op.sparse_normalize(got, [1, 300], device=device_name)
        failures.append("no IndexError")
    except IndexError as err:
        if "300" not in str(err) or not np.array_equal(got.view(np.uint32), before.view(np.uint32)):
            failures.append(f"IndexError: {err}")
    w = rng.standard_normal((50, 9))
    if not np.allclose(caffe2op.normalize(w, axis=0, device=device_name), caffe2op.normalize(w, axis=0)):
        failures.append("normalize dense")
    out = np.empty_like(w)
    if caffe2op.normalize(w, axis=1, out=out, device=device_name) is not out or not np.allclose(
        out, caffe2op.normalize(w, axis=1)
    ):
        failures.append("normalize out=")
    csr = sp.random(40, 30, density=0.2, format="csr", random_state=2)
    result = caffe2op.normalize(csr, axis=1, device=device_name)
    if not np.allclose(result.toarray(), caffe2op.normalize(csr, axis=1).toarray()):
        failures.append("normalize csr")
    x = rng.standard_normal((4, 5)).astype(np.float32)
    if not np.array_equal(caffe2op.stop_gradient(x, device=device_name), x):
        failures.append("stop_gradient")
    try:  # a device blob cannot live in this process
        caffe2op.Workspace().feed_blob("x", x, device_name)
        failures.append("feed_blob on the device worked?")
    except RuntimeError as err:
        if "forked" not in str(err) or "spawn" not in str(err):
            failures.append(f"feed_blob: {err}")
    return failures


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_runs_opencl_through_a_helper_process(opencl_device):
    """After the parent used OpenCL, a fork child's functional OpenCL calls work (in a helper process), CPU ones too."""
    table = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    caffe2op.sparse_normalize(table, np.arange(2000), device=_name(opencl_device))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            t = np.ones((50, 8), np.float32)
            caffe2op.sparse_normalize(t, np.arange(50))  # CPU
            ok_cpu = bool(np.allclose(np.linalg.norm(t, axis=1), 1.0))
            try:
                failures = _child_opencl_report(_name(opencl_device))
            except Exception as err:  # noqa: BLE001  (reported to the parent)
                failures = [repr(err)]
            os.write(write, f"{ok_cpu}|{';'.join(failures)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    status = _wait_or_kill(pid, FORK_TIMEOUT_S)
    report = os.read(read, 65536).decode()
    os.close(read)
    assert status == 0, f"child hung or failed (status {status})"
    ok_cpu, failures = report.split("|", 1)
    assert ok_cpu == "True"
    assert failures == ""
    # the parent's own device still works after the child and its helper are gone
    again = np.ones((4, 4), np.float32)
    caffe2op.sparse_normalize(again, [0], device=_name(opencl_device))
    assert np.allclose(again[0], 0.5)


def test_fork_child_makes_its_own_context_when_the_parent_never_probed(opencl_device):
    """A child forked before the parent's first OpenCL call runs OpenCL kernels itself."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import numpy as np, caffe2op
        x = np.ones((30, 4), np.float32)
        caffe2op.sparse_normalize(x, np.arange(30))  # CPU first, as a data loader would
        pid = os.fork()
        if pid == 0:
            t = np.ones((30, 4), np.float32)
            caffe2op.sparse_normalize(t, np.arange(30), device="{_name(opencl_device)}")
            os._exit(0 if np.allclose(t, 0.5) else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=FORK_TIMEOUT_S, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_fork_child_works_when_the_parent_used_pyopencl_itself(opencl_device):
    """A parent that initialised the driver through pyopencl directly (not through caffe2op) does not hang its child."""
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np, pyopencl as cl
        platforms = cl.get_platforms()  # the caller's own use of the driver
        context = cl.Context([platforms[0].get_devices()[0]])
        queue = cl.CommandQueue(context)
        buffer = cl.Buffer(context, cl.mem_flags.COPY_HOST_PTR, hostbuf=np.ones(4, np.float32))
        cl.enqueue_copy(queue, np.empty(4, np.float32), buffer)
        queue.finish()
        import caffe2op
        pid = os.fork()
        if pid == 0:
            t = np.ones((30, 4), np.float32)
            caffe2op.sparse_normalize(t, np.arange(30), device="{_name(opencl_device)}")
            os._exit(0 if np.allclose(t, 0.5) else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=FORK_TIMEOUT_S, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _pool_task(args):
    kind, device = args
    t = np.ones((40, 4), np.float32)
    if kind == "cpu":
        caffe2op.sparse_normalize(t, np.arange(40))
        return float(t[0, 0])
    caffe2op.sparse_normalize(t, np.arange(40), device=device)
    return float(t[0, 0])


def test_fork_pool_finishes_every_task(opencl_device):
    """A fork Pool of 4 workers after the parent used OpenCL: CPU and OpenCL tasks all succeed, none times out."""
    caffe2op.sparse_normalize(np.ones((10, 4), np.float32), [0], device=_name(opencl_device))
    tasks = [("cpu", None)] * 4 + [("opencl", _name(opencl_device))] * 4
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map_async(_pool_task, tasks).get(timeout=FORK_TIMEOUT_S)
    assert results == [0.5] * 8


def test_spawn_pool_runs_opencl(opencl_device):
    """The start method the fork error recommends does run OpenCL work."""
    tasks = [("opencl", _name(opencl_device))] * 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map_async(_pool_task, tasks).get(timeout=2 * FORK_TIMEOUT_S)
    assert results == [0.5, 0.5]


# --- indices changed by another thread while a call runs ---------------------------------------


def test_host_indices_mutated_during_calls(opencl_device):
    """Another thread scribbling huge values into the index array never makes a kernel write out of bounds."""
    rows = 500
    indices = np.arange(rows, dtype=np.int64)
    stop = threading.Event()

    def scribble():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            indices[rng.integers(0, rows)] = rng.choice([2**40, -(2**40), 7])
            indices[:] = np.arange(rows)

    backend = backend_for(opencl_device)
    device_table = backend.from_host(np.ones((rows, 16), np.float32))
    host_table = np.ones((rows, 16), np.float32)
    thread = threading.Thread(target=scribble)
    thread.start()
    errors = 0
    try:
        for _ in range(60):
            for call in (
                lambda: caffe2op.sparse_normalize(host_table, indices, device=_name(opencl_device)),
                lambda: caffe2op.sparse_normalize(device_table, indices),
            ):
                try:
                    call()
                except IndexError:
                    errors += 1  # a value outside the table was seen: a clean error, nothing written
    finally:
        stop.set()
        thread.join()
    # A row is normalised (norm 1) or, if every call that would have selected it was refused or ran
    # while another thread had replaced its index, untouched (norm 4): never anything else.
    for norms in (np.linalg.norm(host_table, axis=1), np.linalg.norm(backend.to_host(device_table), axis=1)):
        assert np.all(np.isclose(norms, 1.0, atol=1e-5) | (norms == 4.0)), norms


# --- DeviceSparseMatrix structure ---------------------------------------------------------------


def test_device_sparse_matrix_structure_cannot_be_changed(opencl_device):
    """Writing the structure arrays or replacing attributes cannot reach the kernels."""
    w = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=3)
    d = caffe2op.DeviceSparseMatrix.from_scipy(w, _name(opencl_device))
    expected = caffe2op.normalize(w, axis=1).toarray()
    d.indptr.set(np.full(51, 2**30, dtype=w.indptr.dtype))  # a copy: changes nothing
    d.indices.set(np.full(w.nnz, 2**30, dtype=w.indices.dtype))
    for name in ("data", "indices", "indptr", "shape", "format", "backend"):
        with pytest.raises(AttributeError):
            setattr(d, name, None)
    out = caffe2op.normalize(d, axis=1, out=d)
    assert_allclose_dtype(out.to_scipy().toarray(), expected)


def test_device_sparse_matrix_copies_the_callers_structure(opencl_device):
    """The constructor copies the checked structure: the caller's arrays may change afterwards."""
    backend = backend_for(opencl_device)
    w = sp.random(20, 30, density=0.3, format="csr", dtype=np.float32, random_state=4)
    data, indices, indptr = (backend.from_host(a) for a in (w.data, w.indices, w.indptr))
    d = caffe2op.DeviceSparseMatrix((data, indices, indptr), w.shape)
    indptr.set(np.full(21, 2**30, dtype=w.indptr.dtype))
    indices.set(np.full(w.nnz, -5, dtype=w.indices.dtype))
    result = caffe2op.normalize(d, axis=0)
    assert_allclose_dtype(result.to_scipy().toarray(), caffe2op.normalize(w, axis=0).toarray())


# --- a host table with device="opencl": only the selected rows ------------------------------------


def test_host_table_only_selected_rows_are_written(opencl_device):
    """Rows outside ``indices`` are never read back or written (a concurrent writer's update survives)."""
    table = np.random.default_rng(5).standard_normal((100, 8)).astype(np.float32)
    selected = np.array([3, 3, 50, 97, 0])
    others = np.setdiff1d(np.arange(100), selected)
    before = table.copy()
    view = table[others]
    caffe2op.sparse_normalize(table, selected, device=_name(opencl_device))
    assert_bit_identical(table[others], view)
    cpu = before.copy()
    caffe2op.sparse_normalize(cpu, selected)
    assert_allclose_dtype(table, cpu)


@pytest.mark.parametrize("device_kind", ["cpu", "opencl"])
def test_concurrent_even_and_odd_rows_lose_no_update(opencl_device, device_kind):
    """Two threads normalising the even and the odd rows of one table: every row ends normalised, on both paths."""
    rows = 4000
    table = (np.random.default_rng(6).standard_normal((rows, 16)) * 3).astype(np.float32)
    device = "cpu" if device_kind == "cpu" else _name(opencl_device)
    barrier = threading.Barrier(2)

    def work(start):
        barrier.wait()
        for chunk in np.array_split(np.arange(start, rows, 2), 5):
            caffe2op.sparse_normalize(table, chunk, device=device)

    threads = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.linalg.norm(table.astype(np.float64), axis=1), 1.0, rtol=1e-5)


# --- caller-created contexts are not kept alive ------------------------------------------------------


def test_caller_contexts_are_not_kept_alive(opencl_device):
    """Rounds of (create a context, run on an array in it, drop it): every context is collected."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    device = backend_for(opencl_device).device
    refs = []
    for _ in range(20):
        context = cl.Context([device])
        queue = cl.CommandQueue(context)
        table = cla.to_device(queue, np.ones((8, 4), np.float32))
        caffe2op.sparse_normalize(table, np.array([0, 3]))
        caffe2op.normalize(table, axis=1)
        refs.append(weakref.ref(context))
        del context, queue, table
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} of {len(refs)} caller contexts are still alive"


# --- errors and messages -----------------------------------------------------------------------------


def test_object_arrays_are_type_errors(opencl_device):
    x = np.array([None])
    with pytest.raises(TypeError, match="StopGradient.*object"):
        caffe2op.stop_gradient(x, device=_name(opencl_device))


def test_constant_fill_larger_than_the_largest_buffer(opencl_device):
    info = backend_for(opencl_device).info
    op = caffe2op.create_operator("ConstantFill", [], "f", shape=[2**31, 4], value=1.0, device_option=opencl_device)
    ws = caffe2op.Workspace()
    with pytest.raises(
        ValueError, match=rf"ConstantFill: .* the largest buffer .* allows is {info.max_alloc_bytes} bytes"
    ):
        ws.run_operator_once(op)


def test_blob_in_a_callers_context_is_named_as_such(opencl_device):
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    context = cl.Context([backend_for(opencl_device).device])
    foreign = cla.to_device(cl.CommandQueue(context), np.ones((3, 2), np.float32))
    ws = caffe2op.Workspace()
    ws._blobs["x"] = foreign
    op = caffe2op.create_operator("StopGradient", "x", "y", device_option=opencl_device)
    with pytest.raises(
        ValueError, match="lives on a caller's own pyopencl context on OPENCL:.* but the operator runs on OPENCL"
    ):
        ws.run_operator_once(op)


def test_huge_device_index_is_reported_as_given():
    big = np.uint64(2**63)
    with pytest.raises(RuntimeError, match=f"OPENCL, {2**63}"):
        backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, big))
    with pytest.raises(RuntimeError, match=f"OPENCL, {2**63}"):
        caffe2op.sparse_normalize(np.ones((2, 2)), [0], device=f"opencl:{2**63}")


@pytest.mark.parametrize("name", ["cpu:1", "cpu:7", "opencl:x", "cuda:-1", "cpu:", "opencl:１"])
def test_bad_device_names_are_rejected(name):
    table = np.ones((2, 2))
    with pytest.raises(ValueError, match="device"):
        caffe2op.sparse_normalize(table, [0], device=name)
    with pytest.raises(ValueError):
        parse_device(name)
    assert_bit_identical(table, np.ones((2, 2)))


def test_device_names_accepted():
    assert parse_device("cpu:0") == caffe2op.DeviceOption()
    assert parse_device(" CUDA:2 ") == caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, 2)
    with pytest.raises(TypeError):
        parse_device(1)
