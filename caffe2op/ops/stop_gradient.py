# SPDX-License-Identifier: BSD-3-Clause
"""StopGradient: identity in the forward pass, a wall for gradients in the backward pass.

Forward: out of place the output is a new copy of the input (same dtype and
shape, never a view); in place it does nothing.  Backward: it has no gradient
(``no_gradient``), so the backward-pass builder stops there; in place it also
cuts every earlier producer of the blob off.
"""

import numpy as np

from .. import _config, _interop, opencl
from .._cpu import stop_gradient as _kernels  # one build: a memcpy gains nothing from CPU variants
from .._validation import require_ndarray, require_writeable
from ..core import DeviceType
from ..devices import backend_for
from ..gradient import no_gradient
from ..opencl import fork_proxy
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import OpSchema, register_schema

__all__ = ["stop_gradient"]

STOP_GRADIENT_SCHEMA = register_schema(
    OpSchema(
        "StopGradient",
        num_inputs=1,
        num_outputs=1,
        inputs=[("X", "Any blob.")],
        outputs=[("Y", "A copy of X (or X itself when in place).")],
        allow_inplace=[(0, 0)],
        identical_type_and_shape=True,
        doc="Identity in the forward pass; no gradient flows back through it.  Out of place "
        "the output is a fresh copy (same dtype and shape); in place (``X -> X``, the usual "
        "Caffe2 idiom) it does nothing and also stops gradients reaching earlier producers "
        "of X.  A StopGradient whose output no later operator reads is an error when a "
        "backward pass is built (Caffe2's 'orphan output' check).",
        formula=r"Y = X,\qquad \frac{\partial L}{\partial X} \text{ is not propagated}",
        example="""\
>>> import numpy as np, caffe2op
>>> x = np.arange(3.0)
>>> y = caffe2op.stop_gradient(x)
>>> y, y is x
(array([0., 1., 2.]), False)
""",
    )
)

# Below this size NumPy's copy is as fast as anything and has less overhead.
_PARALLEL_COPY_MIN_BYTES = 1 << 22


def copy_into(src, dst):
    """Copy ``src`` into ``dst`` (same shape and dtype), with threads for large contiguous arrays."""
    if (
        src.nbytes >= _PARALLEL_COPY_MIN_BYTES
        and src.flags.c_contiguous
        and dst.flags.c_contiguous
        and not np.may_share_memory(src, dst)
    ):
        _kernels.copy_bytes(
            src.reshape(-1).view(np.uint8),
            dst.reshape(-1).view(np.uint8),
            _config.get_num_threads(),
        )
    else:
        np.copyto(dst, src)


def stop_gradient(x, out=None, *, device=None):
    """Return ``x`` unchanged for the forward pass: a copy, or ``x`` itself when ``out is x``.

    The functional form of the StopGradient operator.  Gradients only exist
    in operator nets (see :func:`get_backward_pass`); there StopGradient stops them.

    Parameters
    ----------
    x : array_like or pyopencl.array.Array
        Input data.  A device array is copied on its device (on its queue).
    out : numpy.ndarray or pyopencl.array.Array, optional
        Where to write the copy: an array of ``x``'s shape and dtype (on
        ``x``'s device for a device ``x``).  Passing ``out=x`` is the
        in-place form and does nothing.
    device : str or DeviceOption, optional
        For host data: ``"cpu"`` (the default), or an OpenCL/CUDA device
        (``"opencl"``, ``"cuda:0"``, a DeviceOption) to make the copy there;
        the result is copied back to a NumPy array.

    Returns
    -------
    numpy.ndarray or pyopencl.array.Array
        ``out`` (a new C-contiguous array when ``out`` is None, on ``x``'s
        device), or ``x`` itself in place.

    Raises
    ------
    TypeError
        If ``out`` is not an array of ``x``'s kind or its dtype differs from ``x``'s.
    ValueError
        If ``out``'s shape differs from ``x``'s, ``out`` is read-only, a
        device array is not C-contiguous or lives on another device, or
        ``device`` contradicts where ``x`` lives.
    RuntimeError
        If ``device`` names an OpenCL or CUDA device that does not exist.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> x = np.ones((2, 2), dtype=np.float32)
    >>> y = caffe2op.stop_gradient(x)
    >>> np.shares_memory(x, y)
    False
    >>> caffe2op.stop_gradient(x, out=x) is x
    True
    """
    if out is not None and out is x:
        return x
    if _interop.is_foreign(x) or _interop.is_foreign(out):  # torch/DLPack: views of the same memory
        view = _interop.host_view("StopGradient", "x", _interop.detached(x))
        result = stop_gradient(view, _interop.host_view("StopGradient", "out", out, writes=True), device=device)
        return _interop.like_input(result, x, out)
    if device is not None or type(x).__module__.startswith("pyopencl"):
        return _stop_gradient_elsewhere(x, out, device)
    return _stop_gradient_cpu(x, out)


def _check_host_out(x, out):
    require_ndarray("StopGradient", "out", out)
    if out.dtype != x.dtype:
        raise TypeError(f"StopGradient: out must have dtype {x.dtype}, got {out.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"StopGradient: out must have shape {x.shape}, got {out.shape}")
    require_writeable("StopGradient", "out", out)


def _stop_gradient_cpu(x, out):
    x = np.asarray(x)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:
        _check_host_out(x, out)
    copy_into(x, out)
    return out


@register_cpu_operator("StopGradient")
class StopGradientCPU(Operator):
    """StopGradient on the CPU: copy out of place (reusing the output blob's memory), nothing in place."""

    def run_on_device(self):
        if self.op_def.inputs[0] == self.op_def.outputs[0]:
            return
        x = self.input(0)
        copy_into(x, self.output(0, x.shape, x.dtype))


# Gradients stop here: the backward-pass builder gets None for X.
no_gradient("StopGradient")

# --- OpenCL ------------------------------------------------------------------


def _require_contiguous_device_array(name, value):
    if not value.flags.c_contiguous:
        raise ValueError(f"StopGradient: a device {name} must be C-contiguous")


def _stop_gradient_elsewhere(x, out, device):
    """The functional form's device paths: a device ``x``, or host data with ``device=``."""
    target = opencl.resolve_device(device)
    on_cpu = target is None or target.device_type == DeviceType.CPU
    backend = opencl.backend_of_array(x)
    if backend is None:
        if on_cpu:
            return _stop_gradient_cpu(x, out)
        if fork_proxy.needed(target):  # a fork child of an OpenCL parent: run in a helper process
            return fork_proxy.copy_back(fork_proxy.call("stop_gradient", x, out, device=device), out)
        device_backend = backend_for(target)
        x = np.asarray(x)
        device_backend.check_allocation("StopGradient", x.shape, x.dtype)  # TypeError for object arrays
        if out is not None:
            _check_host_out(x, out)
        # The upload is the device-side copy; a second copy on the device would change nothing.
        result = device_backend.to_host(device_backend.from_host(x))
        if out is None:
            return result
        np.copyto(out, result)
        return out
    if target is not None and (on_cpu or backend_for(target).info.index != backend.info.index):
        raise ValueError(f"StopGradient: x lives on {backend.name} but device={device!r} was asked for")
    _require_contiguous_device_array("x", x)
    queue = x.queue if x.queue is not None else backend.queue
    if out is None:
        out = opencl.require_pyopencl().array.empty(queue, x.shape, x.dtype)
    else:
        if not backend.owns(out):
            raise TypeError(f"StopGradient: out must be a pyopencl array of x's context, got {type(out).__name__}")
        if out.dtype != x.dtype:
            raise TypeError(f"StopGradient: out must have dtype {x.dtype}, got {out.dtype}")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"StopGradient: out must have shape {tuple(x.shape)}, got {tuple(out.shape)}")
        _require_contiguous_device_array("out", out)
    opencl.copy_array(queue, x, out)
    return out


@register_opencl_operator("StopGradient")
@register_cuda_operator("StopGradient")
class StopGradientOpenCL(Operator):
    """StopGradient on an OpenCL device: a device-to-device copy out of place, nothing in place."""

    def run_on_device(self):
        if self.op_def.inputs[0] == self.op_def.outputs[0]:
            return
        x = self.input(0)
        opencl.copy_array(self.backend.queue, x, self.output(0, x.shape, x.dtype))
