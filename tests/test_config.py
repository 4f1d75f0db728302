# SPDX-License-Identifier: BSD-3-Clause
"""Thread control and show_config."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe2op
from caffe2op._cpu import _runtime


def test_set_and_get_num_threads():
    caffe2op.set_num_threads(3)
    assert caffe2op.get_num_threads() == (3 if _runtime.openmp_enabled() else 1)
    caffe2op.set_num_threads(None)
    assert caffe2op.get_num_threads() >= 1
    with pytest.raises(ValueError, match="n must be between 1 and [0-9]+, got 0"):
        caffe2op.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int or None"):
        caffe2op.set_num_threads(2.0)
    with pytest.raises(TypeError):
        caffe2op.set_num_threads(True)


def test_default_threads_follow_omp_num_threads():
    code = "import caffe2op; print(caffe2op.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("3" if _runtime.openmp_enabled() else "1")


def test_show_config_reports_build_threads_numpy_and_opencl():
    out = io.StringIO()
    caffe2op.show_config(file=out)
    text = out.getvalue()
    assert text.startswith(f"caffe2op {caffe2op.__version__}\n")
    assert f"numpy:    {np.__version__}" in text
    assert ("OpenMP: yes" if _runtime.openmp_enabled() else "OpenMP: no") in text
    assert "threads:" in text and "opencl:" in text
    from caffe2op import _dispatch

    assert f"sparse_normalize={_dispatch.loaded['sparse_normalize']}" in text
    assert f"this CPU supports: {', '.join(_dispatch.usable_variants())}" in text


def test_best_supported_cpu_variant_is_loaded():
    from caffe2op import _dispatch
    from caffe2op.ops.sparse_normalize import cpu

    best = _dispatch.usable_variants()[0]
    assert _dispatch.usable_variants()[-1] == "baseline"
    suffix = "" if best == "baseline" else f"_{best}"
    # Either the best variant was built here, or (other architecture, old compiler) the loader fell back.
    if cpu._kernels.__name__ == f"caffe2op._cpu.sparse_normalize{suffix}":
        assert _dispatch.loaded["sparse_normalize"] == best
    else:
        assert _dispatch.loaded["sparse_normalize"] in _dispatch.usable_variants()[1:]


@pytest.mark.parametrize("forced", ["baseline", "avx2", "avx512"])
def test_every_cpu_variant_gives_the_same_bits(forced):
    """Forcing a variant (CAFFE2OP_CPU_VARIANT) loads it when the CPU runs it, and its results equal the baseline's."""
    from caffe2op import _dispatch

    if forced not in _dispatch.usable_variants():
        pytest.skip(f"this CPU cannot run the {forced} variant")
    script = """
import hashlib, numpy as np, caffe2op
from caffe2op import _dispatch
digest = hashlib.sha256()
rng = np.random.default_rng(0)
for dtype in (np.float16, np.float32, np.float64):
    for width in (1, 7, 8, 13, 64, 257):
        for threads in (1, 2):
            caffe2op.set_num_threads(threads)
            table = (rng.standard_normal((3000, width)) * 3).astype(dtype)
            table[::97] *= 1e-170 if dtype == np.float64 else 1  # rows on the scaled path
            table[5::101] *= 1e170 if dtype == np.float64 else 1
            for use_max_norm in (True, False):
                caffe2op.sparse_normalize(table, rng.integers(0, 3000, 2500), use_max_norm=use_max_norm, norm=1.5)
            digest.update(table.tobytes())
digest.update(caffe2op.stop_gradient(rng.standard_normal(1 << 20)).tobytes())
import scipy.sparse as sp
for dtype in (np.float16, np.float32, np.float64):
    for fmt in ("csr", "csc"):
        base = sp.random(3000, 200, density=0.2, format=fmt, dtype=np.float64, random_state=1)
        matrix = type(base)((base.data.astype(dtype) * 3, base.indices, base.indptr), shape=base.shape)
        for axis in (0, 1):
            for out in (None, matrix.copy() if dtype != np.float16 else None):
                digest.update(caffe2op.normalize(matrix, axis=axis, out=out).data.tobytes())
# Every segment length 0..40 (the masked short-vector paths of pyx/caffe2op_normalize.h), with
# NaN, infinities and, in float64, values that send a vector down the rescaled path.
lengths = np.arange(2000) % 41
indptr = np.concatenate([[0], np.cumsum(lengths)])
indices = np.concatenate([np.sort(rng.choice(64, n, replace=False)) for n in lengths]).astype(np.int32)
for dtype in (np.float16, np.float32, np.float64):
    data = (rng.standard_normal(indptr[-1]) * 3).astype(dtype)
    data[::53] = np.nan
    data[7::61] = np.inf
    if dtype == np.float64:
        data[3::89] *= 1e200
        data[11::97] *= 1e-200
    for index_dtype in (np.int32, np.int64):  # the gathers of the cross scaling take either
        def csr(values):
            matrix = sp.csr_matrix((values, indices, indptr), shape=(2000, 64))  # scipy cannot copy float16
            matrix.indices, matrix.indptr = indices.astype(index_dtype), indptr.astype(index_dtype)  # scipy narrows
            return matrix
        for axis in (0, 1):
            digest.update(caffe2op.normalize(csr(data), axis=axis).data.tobytes())
            inplace = csr(data.copy())
            caffe2op.normalize(inplace, axis=axis, out=inplace)
            digest.update(inplace.data.tobytes())
print(_dispatch.loaded["sparse_normalize"], _dispatch.loaded["normalize_sparse"], digest.hexdigest())
"""
    runs = {}
    for variant in ("baseline", forced):
        env = dict(os.environ, CAFFE2OP_CPU_VARIANT=variant)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        runs[variant] = out.stdout.split()
    assert runs[forced][0] == forced or forced not in _dispatch.loaded.values() and forced != "baseline"
    assert runs[forced][1] == runs[forced][0]
    assert runs[forced][2] == runs["baseline"][2]


def test_command_line_config():
    out = subprocess.run([sys.executable, "-m", "caffe2op", "config"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("caffe2op ")


def test_float16_conversions_are_bit_exact():
    bits = np.arange(65536, dtype=np.uint16)
    out = np.empty(bits.size, np.float32)
    _runtime.half_to_float(bits, out)
    expected = bits.view(np.float16).astype(np.float32)
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(out.view(np.uint32)[finite], expected.view(np.uint32)[finite])
    assert np.isnan(out[~finite]).all()
    # Every float16 value, the midpoints between neighbours (ties round to even), and random floats.
    halves = expected[finite & np.isfinite(expected)].astype(np.float64)
    halves = np.unique(halves)
    midpoints = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)
    rng = np.random.default_rng(0)
    spread = (rng.standard_normal(200_000) * 10.0 ** rng.uniform(-9, 6, 200_000)).astype(np.float32)
    extremes = np.array([np.inf, -np.inf, 65504, 65519.996, 65520, 1e9, 5.96e-8, 2.98e-8, 1e-30, -0.0], np.float32)
    values = np.concatenate([halves.astype(np.float32), midpoints, spread, extremes])
    got = np.empty(values.size, np.uint16)
    _runtime.float_to_half(values, got)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, values.astype(np.float16).view(np.uint16))
    nan_bits = np.empty(1, np.uint16)
    _runtime.float_to_half(np.array([np.nan], np.float32), nan_bits)
    assert np.isnan(nan_bits.view(np.float16)[0])


def test_thread_limit_is_per_thread():
    """``_config.thread_limit`` (caffe2op.dask's one kernel thread per Dask thread) changes this thread only."""
    import threading

    from caffe2op import _config

    caffe2op.set_num_threads(2)
    seen = {}
    with _config.thread_limit(1):
        other = threading.Thread(target=lambda: seen.setdefault("other", caffe2op.get_num_threads()))
        other.start()
        other.join()
        with _config.thread_limit(3):
            seen["nested"] = caffe2op.get_num_threads()
        seen["inside"] = caffe2op.get_num_threads()
    seen["after"] = caffe2op.get_num_threads()
    expected = {"other": 2, "nested": 3, "inside": 1, "after": 2}
    if not _config._OPENMP:  # a serial build runs every kernel on 1 thread
        expected = dict.fromkeys(expected, 1)
    assert seen == expected
