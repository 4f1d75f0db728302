# SPDX-License-Identifier: BSD-3-Clause
"""Helpers of the device tests: run one operator in a workspace on a device."""

import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for


def run_op(device, op_type, feeds, inputs, outputs, **args):
    """Feed ``feeds`` on ``device``, run ``op_type`` there, return (workspace, {output: NumPy array})."""
    ws = caffe2op.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value, device)
    ws.run_operator_once(caffe2op.create_operator(op_type, inputs, outputs, device_option=device, **args))
    return ws, {name: ws.fetch_blob(name) for name in ([outputs] if isinstance(outputs, str) else outputs)}


def assert_gradient_close(dx, x, dy, axis):
    """NormalizeGradient's ``dx`` from a device within the dtype's tolerance of the CPU's.

    dX is a difference of two terms, each bounded by ||dY|| / ||X|| along the
    axis, so each element may differ by ``tol * (|dX| + 2 ||dY|| / ||X||)``;
    elements the CPU gives as inf or NaN must be the same on the device.
    """
    from caffe2op.ops.normalize import dense as dense_module

    cpu = dense_module.normalize_gradient_dense("G", x, dy, axis).astype(np.float64)
    wide_x, wide_dy = x.astype(np.float64), dy.astype(np.float64)
    with np.errstate(all="ignore"):
        # Scaled by the largest magnitude first: the norms of 1e200 vectors stay finite.
        scale = np.maximum(np.max(np.abs(wide_x), axis=axis, keepdims=True), np.finfo(np.float64).tiny)
        n = np.maximum(np.sqrt(np.sum((wide_x / scale) ** 2, axis=axis, keepdims=True)) * scale, 1e-12)
        bound = np.sqrt(np.sum(wide_dy**2, axis=axis, keepdims=True)) / n
        err = np.abs(dx.astype(np.float64) - cpu)
    finite = np.isfinite(cpu) & np.isfinite(np.broadcast_to(bound, cpu.shape))
    np.testing.assert_array_equal(dx[~np.isfinite(cpu)].astype(np.float64), cpu[~np.isfinite(cpu)])
    tol = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}[x.dtype.type]
    limit = np.broadcast_to(tol * (np.abs(cpu) + 2 * bound), cpu.shape)
    assert np.all(err[finite] <= limit[finite]), float(np.max(err[finite] - limit[finite]))


def on_device(device, array):
    """A copy of ``array`` on ``device`` (a NumPy copy for the CPU)."""
    return backend_for(device).from_host(np.asarray(array))


def is_cpu(device):
    """Whether ``device`` is the CPU."""
    return device.device_type == caffe2op.DeviceType.CPU


# --- tables of more than 2**31 elements, in a subprocess ---------------------------------
#
# PoCL sizes its device from the NUMA node hwloc reports: on this kind of virtual machine the
# node claims far less memory than /proc/meminfo (about 7 of 24 GiB), so PoCL offers ~4.5 GiB
# with a 2 GiB largest buffer.  HWLOC_SYNTHETIC, computed from /proc/meminfo's MemTotal,
# describes the real machine to hwloc; PoCL then offers enough for one 4 GiB buffer.  Other
# OpenCL drivers ignore the variable.  A subprocess also frees the table when it ends.

LARGE_WIDTH = 16
LARGE_ROWS = 2**31 // LARGE_WIDTH + 4096  # 2**31 + 65536 float16 elements: 4 GiB

# Prepended to every large-table script: `table` is a (rows, width) float16 device blob `w`
# of ones, filled on the device by ConstantFill (no 4 GiB host copy), in workspace `ws`.
LARGE_TABLE_PREAMBLE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import caffe2op
    from caffe2op import DeviceOption, DeviceType
    from caffe2op.devices import backend_for

    index, rows, width = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    device = DeviceOption(DeviceType.OPENCL, index)
    backend = backend_for(device)
    nbytes = rows * width * 2
    if backend.info.max_alloc_bytes < nbytes or backend.info.global_mem_bytes < nbytes + (1 << 30):
        print(f"SKIP: {backend.info.name} cannot hold a {nbytes / 2**30:.1f} GiB buffer "
              f"(largest {backend.info.max_alloc_bytes / 2**30:.1f} GiB)")
        sys.exit(0)
    ws = caffe2op.Workspace()
    ws.run_operator_once(caffe2op.create_operator(
        "ConstantFill", [], "w", shape=[rows, width], dtype="float16", value=1.0, device_option=device))
    table = ws._blobs["w"]
    assert table.size > 2**31
    last = rows - 1
    """
)


def _synthetic_topology():
    """An hwloc topology string with MemTotal from /proc/meminfo in one NUMA node (see above)."""
    with open("/proc/meminfo") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"numa:1(memory={max(1, int(total_kib / 2**20 * 0.92))}GiB) core:{cores} pu:1"


def run_large_table_script(device, body, timeout=900):
    """Run ``LARGE_TABLE_PREAMBLE + body`` for ``device`` in a subprocess; it must print ``OK <size>``.

    Skips when the machine has under 7 GiB free or the device cannot hold the table.
    """
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("needs Linux's /proc/meminfo")
    with open("/proc/meminfo") as meminfo:
        available_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    if available_kib < 7 * 2**20:
        pytest.skip(f"needs about 7 GiB of free memory, {available_kib / 2**20:.1f} GiB available")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LARGE_TABLE_PREAMBLE + textwrap.dedent(body),
            str(device.device_id),
            str(LARGE_ROWS),
            str(LARGE_WIDTH),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HWLOC_SYNTHETIC": _synthetic_topology()},
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if result.stdout.startswith("SKIP"):
        pytest.skip(result.stdout.strip())
    assert result.stdout.startswith("OK"), result.stdout + result.stderr
    assert int(result.stdout.split()[1]) > 2**31


# --- emulated device limits ------------------------------------------------------------------------


def set_emulated_limits(limits):
    """Re-probe the devices under ``CAFFE2OP_OPENCL_LIMITS=limits`` (the ``restore_limits`` fixture undoes it)."""
    from caffe2op.opencl import backend as backend_module

    os.environ["CAFFE2OP_OPENCL_LIMITS"] = limits
    backend_module._reprobe_devices()


# Normalize's determinism tests: each group shares one accumulation (double where fast, or
# compensated), so its limit sets must agree bit for bit: the CPU shape ("" and shape=cpu on
# PoCL), the GPU shape, smaller work-groups (work_group=64), less local memory, and the split
# launches of long vectors forced for every dense row along the last axis (long_vectors=1).
NORMALIZE_LIMIT_GROUPS = {
    "double": [
        "",
        "shape=gpu",
        "shape=gpu,work_group=64",
        "shape=gpu,work_group=128,local_mem=2048",
        "shape=cpu",
        "shape=gpu,long_vectors=1",
    ],
    "compensated": [
        "fast_fp64=0",
        "shape=gpu,fast_fp64=0",
        "shape=gpu,fast_fp64=0,work_group=64",
        "shape=gpu,fast_fp64=0,work_group=128,local_mem=2048",
        "shape=cpu,fast_fp64=0",
        "shape=gpu,fast_fp64=0,long_vectors=1",
    ],  # fmt: skip
}


@contextlib.contextmanager
def emulated_limits(limits):
    """Re-probe the devices under ``CAFFE2OP_OPENCL_LIMITS=limits``, then restore the environment's setting."""
    from caffe2op.opencl import backend as backend_module

    saved = os.environ.get("CAFFE2OP_OPENCL_LIMITS")
    os.environ["CAFFE2OP_OPENCL_LIMITS"] = limits
    backend_module._reprobe_devices()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["CAFFE2OP_OPENCL_LIMITS"]
        else:
            os.environ["CAFFE2OP_OPENCL_LIMITS"] = saved
        backend_module._reprobe_devices()


def assert_same_bits_under_limit_groups(device, accumulation, dtype, battery):
    """Run ``battery(device, dtype)`` (a list of bytes) under every limit set of one accumulation.

    The limit sets are ``NORMALIZE_LIMIT_GROUPS[accumulation]``; every run
    must give exactly the first one's bytes.  Skips where the device cannot
    run ``dtype`` or does not sum it that way.
    """
    reference = None
    for limits in NORMALIZE_LIMIT_GROUPS[accumulation]:
        with emulated_limits(limits):
            info = backend_for(device).info
            if dtype == np.float64 and not info.fp64:
                pytest.skip("device without fp64")
            if accumulation == "double" and not info.fast_fp64 and dtype != np.float64:
                pytest.skip("this device sums float32 in compensated float")
            results = battery(device, dtype)
        if reference is None:
            reference = (limits, results)
            continue
        assert len(results) == len(reference[1])
        differing = [i for i, (a, b) in enumerate(zip(reference[1], results, strict=True)) if a != b]
        assert not differing, f"{limits!r} differs from {reference[0]!r} in results {differing}"


def limits_fixture_value(request):
    """Generator body of a ``limits`` fixture: "" keeps the environment's setting, else :func:`emulated_limits`."""
    if not request.param:
        yield os.environ.get("CAFFE2OP_OPENCL_LIMITS", "")
        return
    with emulated_limits(request.param):
        yield request.param


def skip_unless_accumulation_supported(device, dtype, accumulation):
    """Skip a test of ``dtype`` summed in ``accumulation`` ("double" or "compensated") the device cannot run."""
    info = backend_for(device).info
    if np.dtype(dtype) == np.float64 and not info.fp64:
        pytest.skip("device without fp64")
    if accumulation == "double" and not info.fast_fp64 and np.dtype(dtype) != np.float64:
        pytest.skip("this device sums float32 in compensated float")
