# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize on a table of more than 2^31 elements: the kernels' offsets are 64-bit.

The table is float16 with 16 columns (4 GiB), filled on the device by the
ConstantFill kernel (no 4 GiB host copy); a few rows at the start and the
end (past element 2^31) are normalised, and only those rows and their
neighbours are read back; an out-of-range index then leaves them unchanged.

It runs in a subprocess for two reasons.  The table is freed with the
process.  And PoCL sizes its device from the NUMA node hwloc reports: on
this kind of virtual machine the node claims far less memory than
/proc/meminfo (about 7 of 24 GiB), so PoCL offers ~4.5 GiB with a 2 GiB
largest buffer.  HWLOC_SYNTHETIC, computed from /proc/meminfo's MemTotal,
describes the real machine to hwloc; PoCL then offers enough for one 4 GiB
buffer.  Other OpenCL drivers ignore the variable.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROWS_PAST_2_31 = 4096
WIDTH = 16
ROWS = 2**31 // WIDTH + ROWS_PAST_2_31  # 2**31 + 65536 elements

SCRIPT = textwrap.dedent(
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
    special = np.arange(width, dtype=np.float16)  # a distinct row just past element 2**31
    table[last - 1 : last].set(special.reshape(1, width))
    chosen = np.array([last, 0, last - 1, last, 1, rows - 100, 0], dtype=np.int64)
    ws.feed_blob("i", chosen, device)
    ws.run_operator_once(caffe2op.create_operator(
        "Float16SparseNormalize", ["w", "i"], "w", norm=1.0, device_option=device))

    def rows_of(start, stop):
        return table[start:stop].get().astype(np.float64)

    scaled = np.full(width, 0.25)  # a row of ones has norm 4
    for r in (0, 1, rows - 100, last):
        np.testing.assert_allclose(rows_of(r, r + 1)[0], scaled, rtol=1e-3)
    expected = special.astype(np.float64) / np.linalg.norm(special.astype(np.float64))
    np.testing.assert_allclose(rows_of(last - 1, last)[0], expected, rtol=2e-3, atol=1e-4)
    for r in (2, rows - 101, rows - 99, last - 2):
        np.testing.assert_array_equal(rows_of(r, r + 1)[0], 1.0)
    # rows last - 1 and last start past element 2**31: a signed 32-bit offset
    # would have gone negative and written outside the table instead.
    assert (last - 1) * width > 2**31
    with_bad = np.array([last, rows], dtype=np.int64)
    ws.feed_blob("j", with_bad, device)
    before = rows_of(last - 1, rows)
    try:
        ws.run_operator_once(caffe2op.create_operator(
            "Float16SparseNormalize", ["w", "j"], "w", norm=0.5, device_option=device))
    except IndexError as err:
        assert f"index {rows} at position 1" in str(err), err
    else:
        raise AssertionError("no IndexError")
    np.testing.assert_array_equal(rows_of(last - 1, rows), before)
    print("OK", table.size)
    """
)


def _synthetic_topology():
    """An hwloc topology string with MemTotal from /proc/meminfo in one NUMA node (see the module doc)."""
    with open("/proc/meminfo") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"numa:1(memory={max(1, int(total_kib / 2**20 * 0.92))}GiB) core:{cores} pu:1"


@pytest.mark.slow  # allocates and fills a 4 GiB table in a subprocess (~50 s on 2 cores)
@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux's /proc/meminfo")
def test_table_past_2_31_elements(opencl_device):
    with open("/proc/meminfo") as meminfo:
        available_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    if available_kib < 7 * 2**20:
        pytest.skip(f"needs about 7 GiB of free memory, {available_kib / 2**20:.1f} GiB available")
    env = {**os.environ, "HWLOC_SYNTHETIC": _synthetic_topology()}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(opencl_device.device_id), str(ROWS), str(WIDTH)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if result.stdout.startswith("SKIP"):
        pytest.skip(result.stdout.strip())
    assert result.stdout.startswith("OK"), result.stdout + result.stderr
    assert int(result.stdout.split()[1]) > 2**31
