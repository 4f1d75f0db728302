# SPDX-License-Identifier: BSD-3-Clause
"""Build and runtime configuration: thread count of the CPU kernels, and ``show_config``."""

import contextlib
import functools
import numbers
import os
import platform
import sys
import threading

import numpy as np

from ._cpu import _runtime
from ._version import __version__

__all__ = ["get_num_threads", "set_num_threads", "show_config"]

_num_threads = None
# Per-thread override of the count (thread_limit): Dask runs many kernels at once in one process.
_this_thread = threading.local()
_OPENMP = _runtime.openmp_enabled()


@functools.lru_cache(maxsize=1)
def _default_num_threads():
    """``OMP_NUM_THREADS`` if set, else every core this process may run on (read once, like OpenMP)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_num_threads(n):
    """Set how many threads the CPU kernels use.

    Parameters
    ----------
    n : int or None
        Number of threads (>= 1); None restores the default (``OMP_NUM_THREADS``
        or all available cores).

    Raises
    ------
    TypeError
        If ``n`` is not an int or None.
    ValueError
        If ``n`` < 1.

    Notes
    -----
    Results never depend on the thread count: every kernel splits its work so
    that each output element is computed by one thread in a fixed order.  In
    a build without OpenMP the kernels run serially whatever ``n`` is.

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.set_num_threads(1)
    >>> caffe2op.get_num_threads()
    1
    >>> caffe2op.set_num_threads(None)
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int or None, got {type(n).__name__} ({n!r})")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads():
    """How many threads the CPU kernels use.

    Returns
    -------
    int
        The value of :func:`set_num_threads`, else the default
        (``OMP_NUM_THREADS`` or all available cores); 1 in a build without
        OpenMP.

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.get_num_threads() >= 1
    True
    """
    if not _OPENMP:
        return 1
    limit = getattr(_this_thread, "n", None)
    if limit is not None:
        return limit
    return _num_threads if _num_threads is not None else _default_num_threads()


@contextlib.contextmanager
def thread_limit(n):
    """Within the block, kernels called from *this* thread use ``n`` threads (an int >= 1, not checked).

    Other threads keep :func:`get_num_threads`'s value: caffe2op.dask runs one
    kernel per Dask worker thread, several at once in a process.
    """
    previous = getattr(_this_thread, "n", None)
    _this_thread.n = n
    try:
        yield
    finally:
        _this_thread.n = previous


def _opencl_summary():
    """Lines describing the visible OpenCL platforms (never raises)."""
    try:
        from . import opencl
    except ImportError as err:  # the device layer itself failed to import
        return [f"unavailable ({err})"]
    return opencl.describe_platforms()


def show_config(file=None):
    """Print the version, build, threads, NumPy version and visible OpenCL platforms.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: ``sys.stdout``).

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.show_config()  # doctest: +ELLIPSIS
    caffe2op ...
    """
    out = file if file is not None else sys.stdout
    openmp = _OPENMP
    lines = [
        f"caffe2op {__version__}",
        f"  python:   {platform.python_version()} ({sys.executable})",
        f"  platform: {platform.platform()}",
        f"  numpy:    {np.__version__}",
        f"  build:    Cython kernels, OpenMP: {'yes' if openmp else 'no (serial kernels)'}",
        f"  threads:  {get_num_threads()} (default {_default_num_threads() if openmp else 1}"
        f"{', OMP_NUM_THREADS=' + os.environ['OMP_NUM_THREADS'] if 'OMP_NUM_THREADS' in os.environ else ''})",
        "  opencl:",
    ]
    lines += ["    " + line for line in _opencl_summary()]
    print("\n".join(lines), file=out)
