# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize on a table of more than 2^31 elements: the kernels' offsets are 64-bit.

The table is float16 with 16 columns (4 GiB), filled on the device by the
ConstantFill kernel; a few rows at the start and the end (past element
2^31) are normalised, and only those rows and their neighbours are read
back; an out-of-range index then leaves them unchanged.  It runs in a
subprocess with PoCL sized to the real machine (see
``_device_helpers.run_large_table_script``).
"""

import pytest

from ._device_helpers import run_large_table_script

BODY = """
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


@pytest.mark.slow  # allocates and fills a 4 GiB table in a subprocess (~50 s on 2 cores)
def test_table_past_2_31_elements(opencl_device):
    run_large_table_script(opencl_device, BODY, timeout=600)
