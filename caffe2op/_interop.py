# SPDX-License-Identifier: BSD-3-Clause
"""Zero-copy exchange with other array libraries: CPU ``torch.Tensor``s, DLPack and array-interface objects.

The functional entry points (``sparse_normalize``, ``normalize``,
``stop_gradient``) call :func:`is_foreign` on their array arguments once a
plain NumPy call has been ruled out; foreign objects are turned into NumPy
views of the *same memory* by :func:`host_view`, the NumPy path runs, and
:func:`like_input` gives the result back as the kind of object the caller
passed.  torch is recognised without importing it: a tensor can only exist
once its module is in ``sys.modules``.
"""

import sys

import numpy as np

__all__ = ["detached", "host_view", "is_foreign", "like_input", "mark_written"]


def _torch_tensor_type():
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def is_torch_tensor(value):
    """Whether ``value`` is a ``torch.Tensor`` (or a subclass, e.g. ``nn.Parameter``), without importing torch."""
    tensor_type = _torch_tensor_type()
    return tensor_type is not None and isinstance(value, tensor_type)


def is_foreign(value):
    """Whether ``value`` is an array of another library that :func:`host_view` can see as NumPy memory.

    NumPy arrays (and their subclasses), Python sequences, scipy and pyopencl
    objects are not foreign: the callers handle them as before.
    """
    if value is None or isinstance(value, np.ndarray):
        return False
    if is_torch_tensor(value):
        return True
    module = type(value).__module__ or ""
    if module.startswith(("pyopencl", "scipy")):
        return False
    return hasattr(value, "__dlpack__") or hasattr(value, "__array_interface__")


def _torch_view(op, name, tensor, writes):
    if tensor.requires_grad and sys.modules["torch"].is_grad_enabled():
        what = "updated in place" if writes else "read outside autograd (the result would carry no gradient)"
        hint = (
            "wrap the call in `with torch.no_grad():`"
            if writes
            else "use torch.ops.caffe2op.normalize for a differentiable result, or pass .detach()"
        )
        raise ValueError(f"{op}: {name} requires grad and would be {what}; {hint}")
    try:
        array = tensor.detach().numpy()  # refuses devices, sparse layouts, bfloat16 and lazy conj/neg bits
    except (TypeError, RuntimeError):
        _explain_refused_tensor(op, name, tensor)
        raise
    if not array.flags.c_contiguous:
        raise ValueError(
            f"{op}: {name} is not contiguous (strides {tuple(tensor.stride())}); pass tensor.contiguous()"
            + (" and copy the result back" if writes else "")
        )
    return array


def _explain_refused_tensor(op, name, tensor):
    """Raise the typed error that says what to do with a tensor ``.numpy()`` refused."""
    torch = sys.modules["torch"]
    if tensor.layout != torch.strided:
        raise TypeError(f"{op}: {name} must be a dense (strided) tensor, got layout {tensor.layout}; call .to_dense()")
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{op}: {name} lives on {tensor.device}; caffe2op works on CPU tensors in place (move it with .cpu(), "
            "or run caffe2op on an OpenCL device with device=...)"
        )
    if tensor.dtype == torch.bfloat16:
        raise TypeError(
            f"{op}: {name} is bfloat16, which caffe2op's kernels do not take; convert it (tensor.float()) "
            "or keep float32 master weights and normalise those"
        )
    if tensor.is_conj() or tensor.is_neg():
        raise ValueError(f"{op}: {name} has a lazy conjugate/negative bit; call .resolve_conj()/.resolve_neg()")
    raise TypeError(f"{op}: {name} has dtype {tensor.dtype}, which NumPy (and so caffe2op) cannot take")


def host_view(op, name, value, *, writes=False):
    """A NumPy array sharing ``value``'s memory (``value`` itself when it is not foreign).

    Parameters
    ----------
    op : str
        Operator name for messages.
    name : str
        Argument name for messages.
    value : object
        A ``torch.Tensor``, an object with ``__dlpack__`` or ``__array_interface__``, or anything else
        (returned unchanged).
    writes : bool
        Whether the operation writes into ``value`` (a tensor that requires grad is then refused unless
        grad mode is off).

    Returns
    -------
    object
        A NumPy view of the same memory, or ``value``.

    Raises
    ------
    TypeError
        For sparse tensors and unsupported dtypes (bfloat16 included).
    ValueError
        For tensors that require grad (in grad mode), are not contiguous or are not on the CPU, and
        for DLPack objects that live on a device.
    """
    if not is_foreign(value):
        return value
    if is_torch_tensor(value):
        return _torch_view(op, name, value, writes)
    if hasattr(value, "__dlpack__"):
        try:
            array = np.from_dlpack(value)
        except BufferError as err:
            raise ValueError(f"{op}: {name} cannot be seen as CPU memory through DLPack ({err})") from None
        except TypeError as err:
            raise TypeError(f"{op}: {name} has a dtype NumPy cannot take through DLPack ({err})") from None
    else:
        array = np.asarray(value)
    if writes and not array.flags.writeable:
        raise ValueError(f"{op}: {name} ({type(value).__name__}) is read-only and cannot be updated in place")
    return array


def detached(value):
    """``value.detach()`` for a tensor (StopGradient's input may require grad: cutting it off is the point)."""
    return value.detach() if is_torch_tensor(value) else value


def mark_written(value):
    """Tell autograd that a tensor written through its NumPy view changed (bump its version counter).

    A tensor saved for a backward pass and then renormalised makes that
    backward pass raise, instead of silently using the new values.
    """
    if is_torch_tensor(value):
        sys.modules["torch"].autograd.graph.increment_version(value)


def like_input(result, x, out):
    """Give a new result back as the caller's kind: ``out`` when given, a tensor for tensor input, else NumPy."""
    if out is not None:
        mark_written(out)
        return out
    if is_torch_tensor(x) and isinstance(result, np.ndarray):
        return sys.modules["torch"].from_numpy(result)
    return result
