# SPDX-License-Identifier: BSD-3-Clause
"""OpenCL in a fork child whose parent had used it: the work runs in a fresh helper process.

No OpenCL driver we know survives ``fork()``: the child inherits the driver
initialised by its parent without the driver's threads, and its first
command waits forever (PoCL: even on a context and queue created in the
child; NVIDIA's driver documents the same for CUDA).  A driver cannot be
initialised twice in one process either.  So in such a child the functional
API's host-data calls (:func:`caffe2op.sparse_normalize`,
:func:`caffe2op.normalize`, :func:`caffe2op.stop_gradient` with ``device=``
naming an OpenCL or CUDA device) are sent to a helper process the child
starts on first use with ``fork`` + ``exec`` of the same Python (a fresh
interpreter with its own driver), one per child, reused for every later
call and ended when the child exits.  Arguments and results travel pickled
through a pipe; errors raised there are raised in the child with their own
type, and nothing of the caller's is modified unless the call succeeds.
Device-resident objects (workspace blobs on a device, ``pyopencl`` arrays,
:class:`~caffe2op.DeviceSparseMatrix`) cannot cross a process boundary and
are refused with a RuntimeError that says so.
"""

import atexit
import os
import pickle
import subprocess
import sys
import threading

import numpy as np

from ..core import DeviceType

__all__ = []  # internal: used by the functional API

_WORKER_MODULE = "caffe2op.opencl._fork_worker"
_LOCK = threading.Lock()
_STATE = {"process": None, "pid": None}


def needed(target):
    """Whether a call for the device option ``target`` must go to the helper process.

    True in a fork child whose parent had initialised the OpenCL driver,
    for any device that is not the CPU.
    """
    from . import backend as backend_module

    return (
        bool(backend_module._FORK["driver_from_parent"]) and target is not None and target.device_type != DeviceType.CPU
    )


def _start():
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", _WORKER_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        close_fds=True,
    )


def _process():
    """The helper process of this process (started on first use; a new one after another fork)."""
    process = _STATE["process"]
    if process is None or _STATE["pid"] != os.getpid() or process.poll() is not None:
        _STATE["process"], _STATE["pid"] = _start(), os.getpid()
    return _STATE["process"]


def call(name, *args, **kwargs):
    """Run ``caffe2op.<name>(*args, **kwargs)`` in the helper process and return its result.

    Raises what the call raised there (same type and message), or a
    RuntimeError when the helper process could not run it.
    """
    with _LOCK:
        process = _process()
        try:
            pickle.dump((name, args, kwargs), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            status, value = pickle.load(process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as err:
            _STATE["process"] = None
            raise RuntimeError(
                f"caffe2op: the helper process that runs OpenCL work for this fork child failed ({err!r}); "
                "see its messages above"
            ) from None
    if status == "ok":
        return value
    raise value


def copy_back(result, out):
    """Write the helper's ``result`` into the caller's ``out`` (dense: all of it; sparse: ``data``); return ``out``."""
    if out is None:
        return result
    if isinstance(out, np.ndarray):
        np.copyto(out, result)
    else:  # scipy.sparse with the structure of the result (checked by the call in the helper)
        out.data[...] = result.data
    return out


def _stop():
    process = _STATE["process"]
    if process is not None and _STATE["pid"] == os.getpid():
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()


def _after_fork_in_child():
    # The parent's helper (if any) belongs to the parent: a grandchild starts its own.
    _STATE["process"], _STATE["pid"] = None, None


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop)
