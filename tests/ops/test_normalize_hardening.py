# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and CSR SparseNormalize under hostile conditions: concurrent writers of the index arrays,
stale canonical-format flags, norms that overflow or underflow, long float16 vectors, odd argument types."""

import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import caffe2op
from tests._helpers import assert_allclose_dtype, assert_bit_identical

sp = pytest.importorskip("scipy.sparse")


# --- indices rewritten by another thread while a call runs -----------------------------------------
#
# The kernels must only use what was validated.  A writer thread flips entries of the caller's index
# arrays between valid and wildly out-of-range values for a while; every call must return or raise a
# typed error, and the process must survive.  Run in a subprocess: a segfault fails the test instead of
# killing the test run.

_RACE_PRELUDE = textwrap.dedent(
    """
    import threading, time
    import numpy as np, scipy.sparse as sp, caffe2op

    caffe2op.set_num_threads(2)
    DURATION = float(__import__("sys").argv[1])
    rng = np.random.default_rng(0)

    def run_with_writer(target, write):
        stop = threading.Event()
        def writer():
            bad = np.array([2**30, -2**30, 2**31 - 1, -1], dtype=np.int64)
            i = 0
            while not stop.is_set():
                write(bad[i % 4], i)
                i += 1
        thread = threading.Thread(target=writer)
        thread.start()
        calls = errors = 0
        deadline = time.monotonic() + DURATION
        try:
            while time.monotonic() < deadline:
                try:
                    target()
                except (ValueError, IndexError) as err:
                    errors += 1
                    if errors == 1:
                        print(repr(err)[:300])
                calls += 1
        finally:
            stop.set()
            thread.join()
        return calls, errors
    """
)

_RACES = {
    "sparse_normalize_dense_bitmap_int64": """
        table = rng.standard_normal((2000, 64)).astype(np.float32)
        idx = rng.integers(0, 2000, 2_000_000)  # the bitmap de-duplication, long enough to be hit
        pristine = idx.copy()
        def write(value, i):
            k = (i * 7919) % idx.size
            idx[k] = value
            idx[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.sparse_normalize(table, idx, use_max_norm=False), write))
    """,
    "sparse_normalize_dense_bitmap_int32": """
        table = rng.standard_normal((2000, 64)).astype(np.float32)
        idx = rng.integers(0, 2000, 2_000_000).astype(np.int32)
        pristine = idx.copy()
        def write(value, i):
            k = (i * 7919) % idx.size
            idx[k] = np.int32(max(min(value, 2**31 - 1), -2**31))
            idx[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.sparse_normalize(table, idx, use_max_norm=False), write))
    """,
    "sparse_normalize_dense_hash": """
        table = rng.standard_normal((4_000_000, 2)).astype(np.float32)
        idx = rng.integers(0, 4_000_000, 3000)  # few indices into many rows: the hash de-duplication
        pristine = idx.copy()
        def write(value, i):
            k = (i * 7919) % idx.size
            idx[k] = value
            idx[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.sparse_normalize(table, idx, use_max_norm=False), write))
    """,
    "sparse_normalize_csr_index_array": """
        w = sp.random(2000, 64, density=0.2, format="csr", dtype=np.float32, random_state=0) * 10
        idx = rng.integers(0, 2000, 2_000_000)  # long: the de-duplication runs long enough to be hit
        pristine = idx.copy()
        def write(value, i):
            k = (i * 7919) % idx.size
            idx[k] = value
            idx[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.sparse_normalize(w, idx, use_max_norm=False), write))
    """,
    "sparse_normalize_csr_indptr": """
        w = sp.random(20000, 64, density=0.2, format="csr", dtype=np.float64, random_state=0) * 10
        w.indptr = w.indptr.astype(np.int64)
        w.indices = w.indices.astype(np.int64)
        indptr = w.indptr
        pristine = indptr.copy()
        rows = np.arange(20000)
        def write(value, i):
            k = 1 + i % (indptr.size - 1)
            indptr[k] = value
            indptr[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.sparse_normalize(w, rows), write))
    """,
    "normalize_csr_axis0_indices": """
        w = sp.random(4000, 3000, density=0.05, format="csr", dtype=np.float32, random_state=0)
        indices = w.indices
        pristine = indices.copy()
        def write(value, i):
            k = (i * 104729) % indices.size
            indices[k] = value
            indices[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.normalize(w, axis=0, out=w), write))
    """,
    "normalize_csr_axis0_out_of_place_float16": """
        w = sp.random(4000, 3000, density=0.05, format="csr", dtype=np.float32, random_state=0)
        w.data = w.data.astype(np.float16)  # scipy builds no float16 matrix; it holds one
        w.has_canonical_format = False  # scipy never checked: the duplicate-summing path runs too
        indices = w.indices
        pristine = indices.copy()
        def write(value, i):
            k = (i * 104729) % indices.size
            indices[k] = value
            indices[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.normalize(w, axis=0), write))
    """,
    "normalize_csr_axis1_out_of_place_indices": """
        w = sp.random(30000, 200, density=0.05, format="csr", dtype=np.float32, random_state=0)
        indices = w.indices
        pristine = indices.copy()
        def write(value, i):
            k = (i * 104729) % indices.size
            indices[k] = value
            indices[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.normalize(w, axis=1), write))
    """,
    "normalize_csc_axis1_out_of_place_indptr": """
        w = sp.random(3000, 4000, density=0.05, format="csc", dtype=np.float64, random_state=0)
        indptr = w.indptr
        pristine = indptr.copy()
        def write(value, i):
            k = 1 + i % (indptr.size - 1)
            indptr[k] = value
            indptr[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.normalize(w, axis=1), write))
    """,
    "normalize_csr_axis1_indptr": """
        w = sp.random(30000, 200, density=0.05, format="csr", dtype=np.float32, random_state=0)
        indptr = w.indptr
        pristine = indptr.copy()
        def write(value, i):
            k = 1 + i % (indptr.size - 1)
            indptr[k] = value
            indptr[k] = pristine[k]
        print(run_with_writer(lambda: caffe2op.normalize(w, axis=1, out=w), write))
    """,
}


@pytest.mark.parametrize("case", sorted(_RACES))
def test_concurrent_writer_of_index_arrays_cannot_crash(case):
    script = _RACE_PRELUDE + textwrap.dedent(_RACES[case])
    done = subprocess.run([sys.executable, "-c", script, "1.5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit status {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    calls, errors = eval(done.stdout.strip().splitlines()[-1])
    assert calls > 0


def test_skipped_index_is_reported_not_used():
    """What the kernels do when they find an index that changed: skip it, and the call raises."""
    from caffe2op._cpu import normalize_sparse as kernels

    indices = np.array([0, 5, 1], dtype=np.int32)  # 5: as if rewritten after validation
    src = np.ones(3, dtype=np.float32)
    dst = np.zeros(3, dtype=np.float32)
    scales = np.array([2.0, 3.0], dtype=np.float64)
    assert kernels.cross_apply(indices, src, dst, scales, 1) == 1
    np.testing.assert_array_equal(dst, [2.0, 0.0, 3.0])
    partial = np.empty((1, 2), dtype=np.float64)
    assert kernels.cross_partial_sums(indices, src, partial, 1) == 1
    np.testing.assert_array_equal(partial, [[1.0, 1.0]])
    rows, skipped = kernels.distinct(np.array([1, -1, 7, 1], dtype=np.int64), 3)
    assert skipped == 2 and rows.tolist() == [1]
    indptr = np.array([0, 2, 99], dtype=np.int64)
    out = np.zeros(3, dtype=np.float32)
    assert (
        kernels.segment_normalize(
            indptr, src, out, np.empty(0, np.int64), True, np.empty(0), kernels.SEGMENT_NORMALIZE, False, 1.0, False, 1
        )
        == 1
    )
    np.testing.assert_allclose(out, [2**-0.5, 2**-0.5, 0.0], rtol=1e-6)


# --- stale canonical-format flag ------------------------------------------------------------------


def _tol(dtype):
    from tests._helpers import tolerance

    return tolerance(dtype)


def _with_duplicates(cls, dtype):
    """A matrix with duplicate entries whose has_canonical_format flag wrongly says True."""
    data = np.array([3.0, 1.0, 4.0, 2.0, 2.0, 0.5, 5.0])
    indices = np.array([0, 0, 2, 1, 1, 2, 0], dtype=np.int32)  # (0,0) twice, (1,1) twice
    indptr = np.array([0, 3, 6, 7], dtype=np.int32)
    w = cls((data, indices, indptr), shape=(3, 3))
    w.data = data.astype(dtype)  # scipy builds no float16 matrix; it holds one
    w.has_canonical_format = True
    assert w.has_canonical_format
    return w


def _dense64(w):
    """float64 dense array of a CSR/CSC matrix of any float dtype, duplicates summed (scipy has no float16)."""
    major, minor = np.repeat(np.arange(len(w.indptr) - 1), np.diff(w.indptr)), w.indices[: w.indptr[-1]]
    rows, cols = (major, minor) if w.format == "csr" else (minor, major)
    dense = np.zeros(w.shape)
    np.add.at(dense, (rows, cols), w.data[: w.indptr[-1]].astype(np.float64))
    return dense


@pytest.mark.parametrize("cls", [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.csc_array])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_stale_canonical_flag_is_not_trusted(cls, dtype, axis):
    w = _with_duplicates(cls, dtype)
    dense = _dense64(w)
    result = caffe2op.normalize(w, axis=axis)
    n = np.sqrt((dense**2).sum(axis=axis, keepdims=True))
    # Every stored part is scaled by its vector's scale: the summed result is the normalised matrix.
    assert result.dtype == dtype
    assert_allclose_dtype(_dense64(result), dense / np.maximum(n, 1e-12), dtype=np.float64, **_tol(dtype))


@pytest.mark.parametrize("cls", [sp.csr_matrix, sp.csr_array])
def test_sparse_normalize_stale_canonical_flag_is_not_trusted(cls):
    w = _with_duplicates(cls, np.float64)
    dense = w.toarray()
    caffe2op.sparse_normalize(w, [0, 1, 2], use_max_norm=False)
    n = np.sqrt((dense**2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(w.toarray(), dense / (n + 1e-12), rtol=1e-12)


def test_canonical_matrix_with_a_false_flag_takes_the_direct_path(monkeypatch):
    """The structure, not the flag, decides: a sorted matrix never pays the duplicate-summing copy."""
    from caffe2op.ops.normalize import sparse as sparse_module

    w = sp.random(50, 40, density=0.3, format="csr", random_state=1)
    w.has_canonical_format = False

    def forbidden(*args):
        raise AssertionError("the canonical copy was made for a canonical matrix")

    monkeypatch.setattr(sparse_module, "_canonical_data", forbidden)
    for axis in (0, 1):
        assert_allclose_dtype(caffe2op.normalize(w, axis=axis).toarray(), _normalize_exact(w.toarray(), axis))


# --- overflow and underflow --------------------------------------------------------------------


def _normalize_exact(x, axis, norm=1.0, use_max_norm=False):
    """Normalize's rule in float64 with every norm computed on values scaled by their largest magnitude."""
    x = np.asarray(x, dtype=np.float64)
    moved = np.moveaxis(x, axis, -1)
    result = np.empty_like(moved)
    for index in np.ndindex(moved.shape[:-1]):
        v = moved[index]
        amax = np.max(np.abs(v))
        if not 0 < amax < math.inf:
            n = math.sqrt(np.sum(v * v))
            result[index] = v if use_max_norm and n <= norm else v * (norm / max(n, 1e-12))
            continue
        unit, scaled_norm = v / amax, math.hypot(*(v / amax).tolist())
        with np.errstate(over="ignore"):
            n = amax * scaled_norm  # may be inf
        if use_max_norm and n <= norm:
            result[index] = v
        elif n < 1e-12:
            result[index] = v * (norm / 1e-12)
        else:
            result[index] = unit / scaled_norm * norm
    return np.moveaxis(result, -1, axis)


@pytest.mark.parametrize("value", [1e200, -1e200, 1e308, 1e-200, 5e-324])
@pytest.mark.parametrize("shape_axis", [((4,), 0), ((3, 4), 1), ((4, 3), 0), ((2, 4, 3), 1), ((4, 40), 0)])
def test_dense_float64_norm_neither_overflows_nor_underflows(value, shape_axis):
    shape, axis = shape_axis
    x = np.full(shape, value)
    for use_max_norm, norm in ((False, 1.0), (True, abs(value) / 2)):
        expected = _normalize_exact(x, axis, norm, use_max_norm)
        assert_allclose_dtype(caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm), expected)


def test_dense_only_the_extreme_columns_are_rescued():
    x = np.random.default_rng(0).standard_normal((50, 20))
    x[:, 3] *= 1e250
    x[:, 7] *= 1e-250
    x[:, 11] = 0.0
    x[5, 13] = np.inf
    x[6, 17] = np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        expected = _normalize_exact(x, 0)
    for axis, data in ((0, x), (1, np.ascontiguousarray(x.T))):
        result = caffe2op.normalize(data, axis=axis)
        assert_allclose_dtype(result if axis == 0 else result.T, expected)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("value", [1e200, 1e-200])
def test_sparse_float64_norm_neither_overflows_nor_underflows(fmt, axis, value):
    dense = np.zeros((4, 4))
    dense[:, 1] = value
    dense[2, :] = value
    dense[0, 3] = 0.5
    w = sp.csr_matrix(dense) if fmt == "csr" else sp.csc_matrix(dense)
    expected = _normalize_exact(dense, axis)
    assert_allclose_dtype(caffe2op.normalize(w, axis=axis).toarray(), expected)


@pytest.mark.parametrize("value, expected", [(1e200, 0.5), (1e-200, 1e-200 / (2e-200 + 1e-12)), (1e308, 0.5)])
def test_csr_sparse_normalize_extreme_rows(value, expected):
    w = sp.csr_matrix(np.full((2, 4), value))
    caffe2op.sparse_normalize(w, [0], use_max_norm=False)
    np.testing.assert_allclose(w.toarray()[0], expected, rtol=1e-12)
    np.testing.assert_array_equal(w.toarray()[1], value)


# --- float16 accumulation at any length ----------------------------------------------------------

LONG = 2**25  # 64 MiB of float16: a float32 running sum of its squares drifts by 0.5-1%
# The result is off by its own float16 rounding only (2**-11); a float32 running sum was off by 5e-3 or more.
LONG_RTOL = dict(rtol=2e-3, atol=0.0)


@pytest.mark.parametrize("layout", ["vector", "columns"])
def test_float16_long_vectors_accumulate_accurately(layout):
    if layout == "vector":
        x, axis, length = np.full(LONG, 0.1, dtype=np.float16), 0, LONG
    else:
        x = np.empty((LONG // 16, 16), dtype=np.float16)
        x[...] = np.linspace(-3.0, 3.0, 16, dtype=np.float16) + np.float16(0.0625)
        axis, length = 0, LONG // 16
    result = caffe2op.normalize(x, axis=axis)
    # Constant vectors: every element of a normalised vector is sign / sqrt(length), exactly known;
    # every element of a vector gets the same scale, so its first and last rows check it.
    expected = np.sign(x[:1].astype(np.float64)) / math.sqrt(length)
    assert_allclose_dtype(result[:1], expected, **LONG_RTOL)
    assert_allclose_dtype(result[-1:], expected, **LONG_RTOL)


@pytest.mark.parametrize("fmt", ["csc", "csr"])
def test_float16_long_sparse_vectors_accumulate_accurately(fmt):
    """One stored column of 2**22 values: CSC walks it as a segment, CSR sums across rows."""
    n = 2**22
    data = np.full(n, 0.1, dtype=np.float32)
    if fmt == "csc":
        w = sp.csc_matrix((data, np.arange(n, dtype=np.int32), np.array([0, n], dtype=np.int32)), shape=(n, 1))
    else:
        w = sp.csr_matrix((data, np.zeros(n, np.int32), np.arange(n + 1, dtype=np.int32)), shape=(n, 2))
    w.data = data.astype(np.float16)  # scipy builds no float16 matrix; it holds one
    result = caffe2op.normalize(w, axis=0)
    for part in (result.data[:8], result.data[-8:]):
        assert_allclose_dtype(part, np.full(8, 1 / math.sqrt(n)), **LONG_RTOL)


# --- argument types and index dtypes -----------------------------------------------------------


@pytest.mark.parametrize("axis", [True, False, np.bool_(True)])
def test_bool_axis_is_rejected(axis):
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="Normalize: argument 'axis' must be an int"):
        caffe2op.normalize(x, axis=axis)
    with pytest.raises(TypeError, match="Normalize"):
        caffe2op.normalize(sp.csr_matrix(x), axis=axis)


@pytest.mark.parametrize("index_dtype", [np.uint64, np.uint32, np.int16])
def test_unsupported_index_dtypes_name_the_operator(index_dtype):
    w = sp.csr_matrix(np.eye(3))
    w.indices = w.indices.astype(index_dtype)
    before = w.data.copy()
    with pytest.raises(TypeError, match=r"Normalize: W\.indptr and W\.indices must be int32 or int64.*got int32 and"):
        caffe2op.normalize(w, axis=0)
    with pytest.raises(TypeError, match=r"SparseNormalize: param\.indptr and param\.indices must be int32 or int64"):
        caffe2op.sparse_normalize(w, [0])
    assert_bit_identical(w.data, before)


@pytest.mark.parametrize("dtype, norm", [(np.float16, 70000.0), (np.float32, 1e300)])
def test_norm_beyond_the_dtype_is_rejected(dtype, norm):
    x = np.ones((2, 3), dtype=dtype)
    with pytest.raises(
        ValueError, match=re.escape(f"Normalize: norm={norm!r} cannot be represented in {np.dtype(dtype)}")
    ):
        caffe2op.normalize(x, norm=norm, out=x)
    assert_bit_identical(x, np.ones((2, 3), dtype=dtype))
    w = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    w.data = w.data.astype(dtype)
    with pytest.raises(ValueError, match="Normalize: norm="):
        caffe2op.normalize(w, axis=0, norm=norm, out=w)
    with pytest.raises(ValueError, match="SparseNormalize: norm="):
        caffe2op.sparse_normalize(w, [0], norm=norm, use_max_norm=False)
    assert_bit_identical(w.data, np.ones(6, dtype=dtype))
