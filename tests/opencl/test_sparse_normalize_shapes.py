# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize's OpenCL kernels under every launch shape, accumulation mode and emulated limit.

- Overflow and underflow: rows near the ends of each dtype's range give the
  CPU kernel's results and an independent scaled float64 reference, in
  max-norm and constant-norm mode, in every limit set (issue 10 item 7).
- Determinism: the same input gives the same bits in every launch shape and
  work-group size of one accumulation mode ("double", "compensated" with
  ``fast_fp64=0``), for rows whose length or table offset is or is not a
  multiple of the vector width, and twice in a row (issue 16 items 7, 8).
- The per-queue scratch buffer: shared by threads, grown, and never keeping
  a caller's context alive.
"""

import gc
import math
import threading
import weakref

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.opencl import backend as backend_module
from caffe2op.opencl import programs

from .._helpers import assert_allclose_dtype, assert_bit_identical
from ._device_helpers import emulated_limits as emulated

DTYPES = [np.float16, np.float32, np.float64]

# Limit sets that share an accumulation mode must agree bit for bit.  "double" on PoCL (fast fp64).
DOUBLE_LIMITS = ["", "shape=gpu", "shape=gpu,work_group=64", "shape=gpu,work_group=128,local_mem=2048", "shape=cpu"]
# Compensated float sums for float32 tables, as on consumer GPUs.
COMPENSATED_LIMITS = [
    "fast_fp64=0",
    "shape=gpu,fast_fp64=0",
    "shape=gpu,fast_fp64=0,work_group=64",
    "shape=gpu,fast_fp64=0,work_group=128,local_mem=2048",
    "shape=cpu,fast_fp64=0",
]
ALL_LIMITS = DOUBLE_LIMITS + COMPENSATED_LIMITS + ["shape=gpu,fp64=0", "shape=cpu,fp64=0"]
WIDTHS = [1, 3, 4, 63, 64, 65, 300, 1024]


def _backend(device):
    return backend_for(caffe2op.opencl.resolve_device(f"opencl:{device.device_id}"))


def scaled_reference(param, indices, use_max_norm, norm):
    """Caffe2's rule in float64 with a norm that neither overflows nor underflows (math.hypot-like scaling)."""
    out = np.array(param, dtype=np.float64, copy=True)
    rows = out.reshape(out.shape[0], -1)
    for i in dict.fromkeys(np.asarray(indices).reshape(-1).tolist()):
        m = float(np.max(np.abs(rows[i]))) if rows.shape[1] else 0.0
        if m == 0:
            continue
        e = math.frexp(m)[1]
        r = math.sqrt(math.fsum((math.ldexp(float(x), -e)) ** 2 for x in rows[i]))
        try:
            n = math.ldexp(r, e)
        except OverflowError:
            n = math.inf
        if use_max_norm and n <= norm:
            continue
        if e > 0:  # x * norm / (r 2^e + eps), computed without overflow
            rows[i] = [math.ldexp(float(x), -e) * (norm / (r + math.ldexp(1e-12, -e))) for x in rows[i]]
        else:
            rows[i] = [float(x) * (norm / (n + 1e-12)) for x in rows[i]]
    return out.astype(param.dtype)


def _extreme_table(dtype):
    """Rows whose sum of squares overflows or underflows in the dtype's own precision (and in float)."""
    info = np.finfo(dtype)
    big = float(info.max) / 4
    tiny = float(info.smallest_normal) * 2
    rows = [
        np.full(4, big),  # squares overflow
        np.full(4, tiny),  # squares underflow
        np.array([big, 1.0, -big, 0.5]),
        np.array([tiny, 0.0, -3 * tiny, float(info.smallest_subnormal)]),
        np.array([3.0, 4.0, 0.0, 0.0]),  # an ordinary row beside them
        np.zeros(4),
    ]
    if dtype != np.float16:  # float32 squares overflow the float sum of a compensated device at ~1.8e19
        rows += [np.full(4, 1e19), np.full(4, 1e-25), np.array([1e30, -2e30, 1e-30, 0.0])]
    if dtype == np.float64:
        rows += [np.full(4, 1e200), np.full(4, 1e-200), np.array([1e300, 1e-300, -1e300, 5e-324])]
    with np.errstate(over="ignore"):
        return np.array(rows).astype(dtype)


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=lambda text: text or "env")
def test_overflow_and_underflow_rows(opencl_device, limits):
    """Rows near the ends of the range: the CPU kernel's results and the scaled reference, in every limit set."""
    with emulated(limits):
        backend = _backend(opencl_device)
        for dtype in DTYPES:
            if dtype == np.float64 and not backend.info.fp64:
                continue
            table = _extreme_table(dtype)
            indices = np.arange(table.shape[0])
            for use_max_norm, norm in ((False, 1.0), (True, 1.0), (False, 2.0), (True, 1e-3)):
                cpu = caffe2op.sparse_normalize(table.copy(), indices, use_max_norm=use_max_norm, norm=norm)
                device_table = backend.from_host(table)
                caffe2op.sparse_normalize(
                    device_table, backend.from_host(indices), use_max_norm=use_max_norm, norm=norm
                )
                result = device_table.get()
                assert np.all(np.isfinite(result)), (dtype, use_max_norm, norm, result)
                ref = scaled_reference(table, indices, use_max_norm, norm)
                assert_allclose_dtype(result, ref, err_msg=f"{np.dtype(dtype)} {use_max_norm} {norm}")
                assert_allclose_dtype(result, cpu, err_msg=f"{np.dtype(dtype)} {use_max_norm} {norm}")


@pytest.mark.parametrize("limits", ["", "shape=gpu,fast_fp64=0", "shape=cpu,fast_fp64=0"], ids=lambda t: t or "env")
def test_issue_reproductions(opencl_device, limits):
    """issue 10 item 7 on OpenCL: a 1e200 row becomes 0.5s, a 1e-200 row is rescaled, 1e19 float32 rows too."""
    with emulated(limits):
        device = f"opencl:{opencl_device.device_id}"
        if _backend(opencl_device).info.fp64:
            out = caffe2op.sparse_normalize(np.full((2, 4), 1e200), [0], device=device)
            np.testing.assert_array_equal(out, [[0.5] * 4, [1e200] * 4])
            out = caffe2op.sparse_normalize(np.full((2, 4), 1e-200), [0], use_max_norm=False, norm=2.0, device=device)
            # Caffe2's epsilon dominates: x * norm / (2e-200 + 1e-12)
            assert_allclose_dtype(out[0], np.full(4, 1e-200 * 2.0 / 1e-12))
            assert_bit_identical(out[1], np.full(4, 1e-200))
        for value in (1e19, 3e30, 1e-25):
            out = caffe2op.sparse_normalize(np.full((2, 4), value, np.float32), [1], use_max_norm=False, device=device)
            want = np.full(4, 0.5) if value > 1 else np.full(4, value / (2 * value + 1e-12))
            assert_allclose_dtype(out[1], want)
            assert_bit_identical(out[0], np.full(4, value, np.float32))


@pytest.mark.parametrize("limits", ["", "shape=gpu,fast_fp64=0", "shape=cpu"], ids=lambda t: t or "env")
def test_nan_and_inf_rows_as_the_cpu(opencl_device, limits):
    """A row with NaN becomes NaN; a row with an infinite element becomes x * 0 (NaN where infinite), as on the CPU."""
    with emulated(limits):
        backend = _backend(opencl_device)
        for dtype in DTYPES:
            if dtype == np.float64 and not backend.info.fp64:
                continue
            table = np.array([[np.nan, 1, 2, 3], [np.inf, 1, -2, 0], [-np.inf, np.inf, 1, 1], [1, 2, 3, 4]], dtype)
            for use_max_norm in (False, True):
                cpu = caffe2op.sparse_normalize(table.copy(), [0, 1, 2, 3], use_max_norm=use_max_norm, norm=1.0)
                out = caffe2op.sparse_normalize(
                    table.copy(),
                    [0, 1, 2, 3],
                    use_max_norm=use_max_norm,
                    norm=1.0,
                    device=f"opencl:{opencl_device.device_id}",
                )
                np.testing.assert_array_equal(np.isnan(out), np.isnan(cpu))
                assert_allclose_dtype(np.nan_to_num(out), np.nan_to_num(cpu))


def _shape_cases(backend):
    """(name, table, indices, use_max_norm, norm) covering every dtype, row width and kernel path."""
    rng = np.random.default_rng(16)
    for dtype in DTYPES:
        if dtype == np.float64 and not backend.info.fp64:
            continue
        for width in WIDTHS:
            table = (rng.standard_normal((40, width)) * rng.choice([0.3, 3.0], (40, 1))).astype(dtype)
            table[5] = 0
            indices = rng.integers(0, 40, 60)
            for use_max_norm in (False, True):
                yield f"{np.dtype(dtype)} w{width} {use_max_norm}", table, indices, use_max_norm, 1.5


def _run_cases(opencl_device):
    """{case: (aligned result, result at an odd table offset)}, each run twice (same bits both times)."""
    backend = _backend(opencl_device)
    results = {}
    for name, table, indices, use_max_norm, norm in _shape_cases(backend):
        runs = []
        for offset in (0, 0, 1):
            flat = np.concatenate([np.zeros(offset, table.dtype), table.ravel()])
            device_flat = backend.from_host(flat)
            device_table = device_flat[offset:].reshape(table.shape)  # offset 1: the scalar path
            caffe2op.sparse_normalize(device_table, backend.from_host(indices), use_max_norm=use_max_norm, norm=norm)
            runs.append(device_table.get())
        assert_bit_identical(runs[0], runs[1])
        results[name] = (runs[0], runs[2])
    return results


@pytest.mark.parametrize("family", [DOUBLE_LIMITS, COMPENSATED_LIMITS], ids=["double", "compensated"])
def test_same_bits_in_every_launch_shape(opencl_device, family):
    """One canonical reduction order: identical bits across shapes, work-group sizes, local memory and offsets."""
    by_limits = {}
    for limits in family:
        with emulated(limits):
            by_limits[limits] = _run_cases(opencl_device)
    first = by_limits[family[0]]
    for limits, results in by_limits.items():
        for name, (aligned, shifted) in results.items():
            assert aligned.tobytes() == first[name][0].tobytes(), f"{name}: {limits!r} differs from {family[0]!r}"
            assert shifted.tobytes() == aligned.tobytes(), f"{name}: odd table offset differs under {limits!r}"
    # ... and within the dtype's tolerance of the CPU kernel and of the float64 reference
    backend = _backend(opencl_device)
    for name, table, indices, use_max_norm, norm in _shape_cases(backend):
        cpu = caffe2op.sparse_normalize(table.copy(), indices, use_max_norm=use_max_norm, norm=norm)
        assert_allclose_dtype(first[name][0], cpu, err_msg=name)


def test_compensated_mode_is_used(opencl_device):
    """fast_fp64=0 makes float32 tables sum in compensated float, float16 in float, float64 in double."""
    with emulated("fast_fp64=0"):
        info = _backend(opencl_device).info
        modes = [programs.accumulation(np.dtype(d), info, half_in_float=True) for d in DTYPES]
    assert modes == ["float", "compensated", "double"]


def test_threads_share_one_queue(opencl_device):
    """Threads on one queue (one cached hash set) each get their own rows right, with device indices."""
    backend = _backend(opencl_device)
    rng = np.random.default_rng(3)
    tables = [(rng.standard_normal((300, 16)) * 4).astype(np.float32) for _ in range(4)]
    index_sets = [rng.integers(0, 300, 500) for _ in range(4)]
    results, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(5):
                device_table = backend.from_host(tables[i])
                caffe2op.sparse_normalize(device_table, backend.from_host(index_sets[i]), use_max_norm=False, norm=1.0)
                results[i] = device_table.get()
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(4):
        cpu = caffe2op.sparse_normalize(tables[i].copy(), index_sets[i], use_max_norm=False, norm=1.0)
        assert_allclose_dtype(results[i], cpu)


def test_scratch_grows_and_bad_indices_still_raise(opencl_device):
    """Small, large, then small calls reuse the grown buffer; a bad device index still writes nothing."""
    backend = _backend(opencl_device)
    rng = np.random.default_rng(4)
    table = rng.standard_normal((1000, 8)).astype(np.float32)
    for k in (3, 5000, 10):
        indices = rng.integers(0, 1000, k)
        device_table = backend.from_host(table)
        caffe2op.sparse_normalize(device_table, backend.from_host(indices), use_max_norm=False, norm=1.0)
        cpu = caffe2op.sparse_normalize(table.copy(), indices, use_max_norm=False, norm=1.0)
        assert_allclose_dtype(device_table.get(), cpu)
    device_table = backend.from_host(table)
    with pytest.raises(IndexError, match="index 1000 at position 2"):
        caffe2op.sparse_normalize(device_table, backend.from_host(np.array([0, 4, 1000, 7])))
    assert_bit_identical(device_table.get(), table)


def test_scratch_cache_keeps_no_context_alive(opencl_device):
    """A caller's context, used once and dropped, is freed: the per-queue scratch cache holds it weakly."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    device = backend_module._enumerate()[1][_backend(opencl_device).info.index]
    refs = []
    for _ in range(3):
        context = cl.Context([device])
        queue = cl.CommandQueue(context)
        table = cla.to_device(queue, np.ones((4, 3), np.float32))
        caffe2op.sparse_normalize(table, cla.to_device(queue, np.array([0, 2])), use_max_norm=False, norm=1.0)
        np.testing.assert_allclose(table.get()[0], np.full(3, 3**-0.5), rtol=1e-6)
        refs.append(weakref.ref(context))
        del context, queue, table
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_compensated_device_nearly_matches_a_double_device(opencl_device):
    """float32 rows summed in compensated float land on a double device's bits (measured: 1 in 3.1 million differs)."""
    rng = np.random.default_rng(1)
    tables = {w: (rng.standard_normal((2000, w)) * rng.choice([1e-3, 1.0, 50.0], (2000, 1))).astype(np.float32)
              for w in (3, 64, 300)}  # fmt: skip
    results = {}
    for limits in ("", "fast_fp64=0"):
        with emulated(limits):
            backend = _backend(opencl_device)
            if not limits and programs.accumulation(np.dtype(np.float32), backend.info) != "double":
                pytest.skip("the device sums float32 in compensated float already")
            for width, table in tables.items():
                device_table = backend.from_host(table)
                caffe2op.sparse_normalize(
                    device_table, backend.from_host(np.arange(2000)), use_max_norm=False, norm=1.0
                )
                results[limits, width] = device_table.get()
    for width in tables:
        double, compensated = results["", width], results["fast_fp64=0", width]
        ulps = np.abs(double.view(np.int32).astype(np.int64) - compensated.view(np.int32).astype(np.int64))
        assert ulps.max() <= 1 and np.count_nonzero(ulps) <= 5, (width, ulps.max(), np.count_nonzero(ulps))


@pytest.mark.parametrize("dtype, norm", [(np.float16, 1e300), (np.float16, 70000.0), (np.float32, 1e300)])
def test_device_table_refuses_a_norm_its_dtype_cannot_hold(opencl_device, dtype, norm):
    """As on the host: a device table whose dtype cannot hold ``norm`` raises, untouched (found by the fuzz suite)."""
    table = _backend(opencl_device).from_host(np.ones((3, 2), dtype))
    for rows in ([0], []):
        with pytest.raises(ValueError, match="norm"):
            caffe2op.sparse_normalize(table, rows, norm=norm, use_max_norm=False)
    assert_bit_identical(table.get(), np.ones((3, 2), dtype))
