# SPDX-License-Identifier: BSD-3-Clause
"""Build and runtime configuration: thread count of the CPU kernels, and ``show_config``."""

import contextlib
import functools
import numbers
import os
import platform
import sys
import threading
import warnings

import numpy as np

from ._cpu import _runtime
from ._version import __version__

__all__ = ["get_num_threads", "set_num_threads", "show_config"]

_num_threads = None
# Per-thread override of the count (thread_limit): Dask runs many kernels at once in one process.
_this_thread = threading.local()
_OPENMP = _runtime.openmp_enabled()

# Set in a child made by fork(): GNU OpenMP's thread pool does not survive a
# fork (the child's first parallel region waits forever for threads that only
# exist in the parent), so a forked child runs every kernel on one thread.
_forked_child = False


def _usable_cpus():
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# Far more threads than cores only costs time, and tens of thousands of them
# crash the OpenMP runtime (thread creation or its allocation fails).
MAX_NUM_THREADS = max(256, _usable_cpus())


@functools.lru_cache(maxsize=1)
def _default_num_threads():
    """``OMP_NUM_THREADS`` (clamped to ``MAX_NUM_THREADS``) if set, else every usable core (read once)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        if int(env) > MAX_NUM_THREADS:
            warnings.warn(
                f"caffe2op: OMP_NUM_THREADS={env} is above the supported maximum; "
                f"the CPU kernels use {MAX_NUM_THREADS} threads",
                RuntimeWarning,
                stacklevel=2,
            )
            return MAX_NUM_THREADS
        return int(env)
    return _usable_cpus()


def _after_fork_in_child():
    global _forked_child
    _forked_child = True
    _runtime.set_default_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
# Read once, as libgomp reads OMP_NUM_THREADS once: get_num_threads() runs on
# every kernel call, where an environment lookup and a system call cost
# microseconds on cold caches.
_DEFAULT_NUM_THREADS = _default_num_threads()
# OpenMP's own default (read by libgomp from OMP_NUM_THREADS) must be as safe as ours.
_runtime.set_default_threads(_DEFAULT_NUM_THREADS)


def set_num_threads(n):
    """Set how many threads the CPU kernels use.

    Parameters
    ----------
    n : int or None
        Number of threads, from 1 to ``MAX_NUM_THREADS`` (256, or the number
        of usable cores if that is larger); None restores the default
        (``OMP_NUM_THREADS``, clamped to the same maximum, or all usable
        cores, as they were at import).

    Raises
    ------
    TypeError
        If ``n`` is not an int or None.
    ValueError
        If ``n`` is outside ``1..MAX_NUM_THREADS``.

    Notes
    -----
    Results never depend on the thread count: every kernel splits its work so
    that each output element is computed by one thread in a fixed order.  In
    a build without OpenMP the kernels run serially whatever ``n`` is.  In a
    child process made by ``os.fork()`` (the default ``multiprocessing``
    start method on Linux) the kernels run on one thread whatever ``n`` is:
    the OpenMP thread pool does not survive a fork.

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
    _num_threads = _checked_thread_count("set_num_threads", n)


def _checked_thread_count(where, n):
    """``n`` as an int in ``1..MAX_NUM_THREADS`` (TypeError / ValueError naming ``where`` otherwise)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{where}: n must be an int or None, got {type(n).__name__} ({n!r})")
    if not 1 <= n <= MAX_NUM_THREADS:
        raise ValueError(f"{where}: n must be between 1 and {MAX_NUM_THREADS}, got {n}")
    return int(n)


def get_num_threads():
    """How many threads the CPU kernels use.

    Returns
    -------
    int
        The value of :func:`set_num_threads`, else the default
        (``OMP_NUM_THREADS`` or all available cores, read at import); 1 in a
        build without OpenMP and in a child process made by ``os.fork()``.

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.get_num_threads() >= 1
    True
    """
    if not _OPENMP or _forked_child:
        return 1
    limit = getattr(_this_thread, "n", None)
    if limit is not None:
        return limit
    return _num_threads if _num_threads is not None else _DEFAULT_NUM_THREADS


@contextlib.contextmanager
def thread_limit(n):
    """Within the block, kernels called from *this* thread use ``n`` threads (checked as by set_num_threads).

    Other threads keep :func:`get_num_threads`'s value: caffe2op.dask runs one
    kernel per Dask worker thread, several at once in a process.
    """
    n = _checked_thread_count("thread_limit", n)
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


def _cpu_variant_summary():
    """Which CPU variant of each kernel module was loaded, and what this CPU supports."""
    from . import _dispatch
    from .ops import normalize, sparse_normalize  # noqa: F401  (load their kernels)

    loaded = ", ".join(f"{stem}={variant}" for stem, variant in sorted(_dispatch.loaded.items()))
    return f"{loaded} (this CPU supports: {', '.join(_dispatch.usable_variants())})"


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
        f"  threads:  {get_num_threads()} (default {_DEFAULT_NUM_THREADS if openmp else 1}"
        f"{', OMP_NUM_THREADS=' + os.environ['OMP_NUM_THREADS'] if 'OMP_NUM_THREADS' in os.environ else ''}"
        f", at most {MAX_NUM_THREADS}{'; serial in this forked child' if _forked_child else ''})",
        f"  cpu kernels: {_cpu_variant_summary()}",
        "  opencl:",
    ]
    lines += ["    " + line for line in _opencl_summary()]
    print("\n".join(lines), file=out)
