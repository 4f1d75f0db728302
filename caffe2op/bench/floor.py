# SPDX-License-Identifier: BSD-3-Clause
"""Measured limits: the C kernels of ``floor.c``, built on first use and loaded with ctypes.

The limits are this machine's: streaming read and copy bandwidth (ordinary and
non-temporal stores), reading given rows, and a complete SparseNormalize
written for speed alone (see ``floor.c``).  They are built with the system C
compiler (``$CC``, else ``cc``) with ``-O3 -march=native -fopenmp`` into a
cache folder outside the source tree (``$XDG_CACHE_HOME/caffe2op-bench``,
else ``~/.cache/caffe2op-bench``), keyed by the source, compiler and flags.
Without a compiler every limit is reported as missing, never guessed.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

from .timing import Missing

SOURCE = pathlib.Path(__file__).with_name("floor.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]

_i64, _int, _ptr, _dbl = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_double
_SIGNATURES = {
    "floor_threads": (_int, []),
    "floor_read": (ctypes.c_uint64, [_ptr, _i64, _int]),
    "floor_copy": (None, [_ptr, _ptr, _i64, _int]),
    "floor_copy_nt": (None, [_ptr, _ptr, _i64, _int]),
    "floor_read_rows": (ctypes.c_uint64, [_ptr, _i64, _ptr, _i64, _int]),
    **{
        f"floor_sparse_normalize_{suffix}": (_i64, [_ptr, _i64, _i64, _ptr, _i64, _int, _dbl, _ptr, _ptr, _int])
        for suffix in ("f16", "f32", "f64")
    },
}
_SUFFIX = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "caffe2op-bench"


@functools.cache
def library():
    """The compiled limits library (built once per source, compiler and flags).

    Returns
    -------
    ctypes.CDLL
        The library, with argument types set.

    Raises
    ------
    Missing
        When no C compiler with OpenMP is available or the build fails.
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise Missing("no C compiler to build the measured limits (set CC)")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"floor-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = pathlib.Path(tmp) / "floor.so"
            run = subprocess.run(
                [compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"], capture_output=True, text=True
            )
            if run.returncode != 0:
                raise Missing(f"building the measured limits failed: {run.stderr.strip()[:300]}")
            os.replace(built, target)  # atomic: a concurrent run sees the whole file or none
    lib = ctypes.CDLL(str(target))
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _address(array):
    return array.ctypes.data


def read(array, threads):
    """Stream through ``array`` once (its bytes, as 64-bit words)."""
    flat = array.reshape(-1).view(np.uint64)
    return library().floor_read(_address(flat), flat.size, threads)


def copy(dst, src, threads, non_temporal=False):
    """Copy ``src`` into ``dst`` (same size, C-contiguous), optionally with non-temporal stores."""
    function = library().floor_copy_nt if non_temporal else library().floor_copy
    function(_address(dst), _address(src), src.nbytes, threads)
    return dst


def read_rows(table, rows, threads):
    """Read every byte of ``table[rows]`` (``rows``: int64, in the order to read them)."""
    table = table.reshape(len(table), -1)
    return library().floor_read_rows(_address(table), table[0].nbytes, _address(rows), rows.size, threads)


class SparseNormalizeFloor:
    """The C floor kernel for one table shape: its scratch (bitmap, row list) is allocated once.

    Parameters
    ----------
    n_rows, n_indices : int
        Table rows and the most indices a call will get.
    dtype : dtype
        float16, float32 or float64.
    threads : int
        OpenMP threads.
    """

    def __init__(self, n_rows, n_indices, dtype, threads):
        suffix = _SUFFIX.get(np.dtype(dtype))
        if suffix is None:
            raise Missing(f"no floor kernel for {np.dtype(dtype)}")
        self._kernel = getattr(library(), f"floor_sparse_normalize_{suffix}")
        self._bitmap = np.zeros((n_rows + 63) // 64, np.uint64)  # kept all-zero between calls by the kernel
        self._rows = np.empty(max(1, n_indices), np.int64)
        self._threads = threads

    def __call__(self, param, indices, use_max_norm=True, norm=1.0):
        """Normalise ``param``'s rows named by ``indices`` (int64, validated by the caller) in place."""
        table = param.reshape(len(param), -1)
        self._kernel(
            _address(table),
            len(table),
            table.shape[1],
            _address(indices),
            indices.size,
            int(use_max_norm),
            float(norm),
            _address(self._bitmap),
            _address(self._rows),
            self._threads,
        )
        return param
