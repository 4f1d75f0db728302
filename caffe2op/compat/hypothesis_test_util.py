# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``caffe2.python.hypothesis_test_util`` (``hu``) for Caffe2's operator tests; needs hypothesis.

:class:`HypothesisTestCase` runs an OperatorDef message in the compat
workspace and checks it against a NumPy reference
(``assertReferenceChecks``), across devices (``assertDeviceChecks``: the
CPU and every OpenCL device) and against finite differences of its
gradient operators (``assertGradientChecks``).  The strategies
(``tensor``, ``tensors``, ``floats``, ``gcs`` ...) draw what Caffe2's drew.

Examples
--------
>>> import numpy as np
>>> from caffe2op.compat import core, hypothesis_test_util as hu
>>> case = hu.HypothesisTestCase()
>>> op = core.CreateOperator("StopGradient", "x", "y")
>>> case.assertReferenceChecks(hu.cpu_do, op, [np.ones(3, np.float32)], lambda x: (x,))
[array([1., 1., 1.], dtype=float32)]
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .. import opencl
from ..core import DeviceType
from ..gradient import get_gradient_defs
from . import caffe2_pb2, core, test_util, workspace

__all__ = [
    "HypothesisTestCase",
    "arrays",
    "dims",
    "elements_of_type",
    "floats",
    "tensor",
    "tensors",
]


def floats(*args, **kwargs):
    """``hypothesis.strategies.floats`` of width 32 unless told otherwise (as Caffe2's ``hu.floats``).

    Parameters
    ----------
    *args, **kwargs
        As ``hypothesis.strategies.floats``; the bounds are rounded to float32.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        The strategy.

    Examples
    --------
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> 0.5 <= find(hu.floats(min_value=0.5, max_value=1.0), lambda v: True) <= 1.0
    True
    """
    kwargs.setdefault("width", 32)
    for bound in ("min_value", "max_value"):
        if kwargs.get(bound) is not None:
            kwargs[bound] = float(np.float32(kwargs[bound]))
    return st.floats(*args, **kwargs)


def dims(min_value=1, max_value=5):
    """One dimension size.

    Parameters
    ----------
    min_value, max_value : int
        The bounds.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Integers in the bounds.

    Examples
    --------
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> find(hu.dims(), lambda d: d > 3)
    4
    """
    return st.integers(min_value=min_value, max_value=max_value)


def elements_of_type(dtype=np.float32, filter_=None):
    """Element values Caffe2 drew for ``dtype`` (floats in [-1, 1], non-negative integers, bools).

    Parameters
    ----------
    dtype : numpy dtype, default float32
        The element type.
    filter_ : callable, optional
        Keep only values for which it is true.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        The strategy.

    Raises
    ------
    ValueError
        For another dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> find(hu.elements_of_type(np.int32), lambda v: v > 7)
    8
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elems = st.floats(min_value=-1.0, max_value=1.0, width=dtype.itemsize * 8)
    elif dtype == np.int32:
        elems = st.integers(min_value=0, max_value=2**31 - 1)
    elif dtype == np.int64:
        elems = st.integers(min_value=0, max_value=2**63 - 1)
    elif dtype == np.bool_:
        elems = st.booleans()
    else:
        raise ValueError(f"elements_of_type: unsupported dtype {dtype}")
    return elems if filter_ is None else elems.filter(filter_)


def arrays(dims, dtype=np.float32, elements=None, unique=False):  # noqa: A002 - Caffe2's names
    """Arrays of shape ``dims``.

    Parameters
    ----------
    dims : sequence of int
        The shape.
    dtype : numpy dtype, default float32
        The element type.
    elements : hypothesis.strategies.SearchStrategy, optional
        The values (:func:`elements_of_type` by default).
    unique : bool, default False
        Distinct values only.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        The strategy.

    Examples
    --------
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> find(hu.arrays([2, 3]), lambda a: True).shape
    (2, 3)
    """
    if elements is None:
        elements = elements_of_type(dtype)
    return hnp.arrays(dtype, dims, elements=elements, unique=unique)


def tensor(min_dim=1, max_dim=4, dtype=np.float32, elements=None, unique=False, **kwargs):
    """One array of ``min_dim`` to ``max_dim`` dimensions (each drawn by :func:`dims`).

    Parameters
    ----------
    min_dim, max_dim : int
        The range of the rank.
    dtype : numpy dtype, default float32
        The element type.
    elements : hypothesis.strategies.SearchStrategy, optional
        The values.
    unique : bool, default False
        Distinct values only.
    **kwargs
        Bounds of each dimension (``min_value``, ``max_value``).

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        The strategy.

    Examples
    --------
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> find(hu.tensor(max_dim=2), lambda a: a.ndim == 2).shape
    (1, 1)
    """
    shapes = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return shapes.flatmap(lambda shape: arrays(shape, dtype, elements, unique=unique))


def tensors(n, min_dim=1, max_dim=4, dtype=np.float32, elements=None, **kwargs):
    """``n`` arrays of one shape.

    Parameters
    ----------
    n : int
        How many.
    min_dim, max_dim : int
        The range of the rank.
    dtype : numpy dtype, default float32
        The element type.
    elements : hypothesis.strategies.SearchStrategy, optional
        The values.
    **kwargs
        Bounds of each dimension.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Lists of ``n`` arrays.

    Examples
    --------
    >>> from caffe2op.compat import hypothesis_test_util as hu
    >>> from hypothesis import find
    >>> [a.shape for a in find(hu.tensors(n=2), lambda arrays: True)]
    [(1,), (1,)]
    """
    shapes = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return shapes.flatmap(lambda shape: st.lists(arrays(shape, dtype, elements), min_size=n, max_size=n))


#: The CPU device option.
cpu_do = caffe2_pb2.DeviceOption()


def _opencl_options():
    try:
        return [caffe2_pb2.DeviceOption(caffe2_pb2.OPENCL, d.index) for d in opencl.opencl_devices()]
    except Exception:  # noqa: BLE001 - no pyopencl or no platform: the CPU only
        return []


#: Every device option: the CPU and each OpenCL device.
device_options = [cpu_do] + _opencl_options()

#: ``gc`` (the device to check on) and ``dc`` (the devices to compare), as Caffe2's ``hu.gcs``.
gcs = dict(gc=st.sampled_from(device_options), dc=st.just(device_options))

#: The same on the CPU only.
gcs_cpu_only = dict(gc=st.sampled_from([cpu_do]), dc=st.just([cpu_do]))


def _names(op, what):
    return list(getattr(op, what))


def _run(op, inputs, device_option, input_device_options=None):
    """Run ``op`` on ``device_option`` with ``inputs`` fed under its input names; return the workspace's outputs."""
    native = caffe2_pb2.as_native(op)
    device = caffe2_pb2._native_device(device_option)
    op_here = type(native)(
        type=native.type,
        inputs=list(native.inputs),
        outputs=list(native.outputs),
        args=dict(native.args),
        name=native.name,
        device_option=device,
        engine=native.engine,
    )
    op_here.is_gradient_op = native.is_gradient_op
    workspace.ResetWorkspace()
    for name, value in zip(native.inputs, inputs, strict=True):
        where = (input_device_options or {}).get(name, device_option)
        workspace.FeedBlob(name, value, where)
    workspace.RunOperatorOnce(op_here)
    return op_here


def _loss_and_outputs(op, values, device_option, input_device_options, grad_outputs):
    """``sum(y**2) / 2`` over the outputs ``grad_outputs`` of ``op`` run on ``values``, and those outputs."""
    _run(op, values, device_option, input_device_options)
    ys = [workspace.FetchBlob(name).astype(np.float64) for name in grad_outputs]
    return sum(float((y * y).sum()) / 2 for y in ys), ys


class HypothesisTestCase(test_util.TestCase):
    """Caffe2's ``hu.HypothesisTestCase``: reference, device and gradient checks of one operator.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.compat import core, hypothesis_test_util as hu
    >>> op = core.CreateOperator("Normalize", "X", "Y", axis=1)
    >>> x = np.array([[3.0, 4.0]], np.float32)
    >>> hu.HypothesisTestCase().assertGradientChecks(hu.cpu_do, op, [x], 0, [0])
    """

    def assertReferenceChecks(  # noqa: N802 - Caffe2's name
        self,
        device_option,
        op,
        inputs,
        reference,
        input_device_options=None,
        threshold=1e-4,
        output_to_grad=None,
        grad_reference=None,
        atol=None,
        outputs_to_check=None,
        ensure_outputs_are_inferred=False,
    ):
        """Run ``op`` and compare its outputs with ``reference(*inputs)``.

        Parameters
        ----------
        device_option : caffe2_pb2.DeviceOption
            Where to run.
        op : caffe2_pb2.OperatorDef
            The operator; ``inputs`` are fed under its input names.
        inputs : list of numpy.ndarray
            The input values.
        reference : callable
            ``reference(*inputs)`` returns the expected outputs (a tuple or list).
        input_device_options : dict, optional
            ``{input name: DeviceOption}`` for inputs fed elsewhere.
        threshold : float, default 1e-4
            Relative (and, without ``atol``, absolute) tolerance.
        output_to_grad : str, optional
            With ``grad_reference``: the output whose gradient drives the
            check.  As in Caffe2, its gradient is the output's own value.
        grad_reference : callable, optional
            ``grad_reference(output_grad, reference_outputs, inputs)`` returns
            one expected input gradient per input of ``op`` (None where the
            input has no gradient; ``(values, indices)`` for a sparse one).
            The gradient operators of Caffe2's backward pass of ``op`` for
            ``{output_to_grad: output_to_grad + "_grad"}`` are run on the
            gradient and their results compared with it.
        atol : float, optional
            Absolute tolerance.
        outputs_to_check : list of int, optional
            Which outputs to compare (all by default).
        ensure_outputs_are_inferred : bool, default False
            Ignored.

        Returns
        -------
        list of numpy.ndarray
            The outputs.

        Raises
        ------
        AssertionError
            If an output differs from the reference.
        TypeError
            If the reference does not return a tuple or list.
        ValueError
            If ``grad_reference`` is given without ``output_to_grad``.

        Examples
        --------
        >>> import numpy as np
        >>> from caffe2op.compat import core, hypothesis_test_util as hu
        >>> op = core.CreateOperator("Normalize", "X", "Y", axis=1)
        >>> x = np.array([[3.0, 4.0]], np.float32)
        >>> hu.HypothesisTestCase().assertReferenceChecks(hu.cpu_do, op, [x], lambda X: (X / 5,))
        [array([[0.6, 0.8]], dtype=float32)]
        """
        expected = reference(*[np.copy(x) for x in inputs])
        if not isinstance(expected, (tuple, list)):
            raise TypeError("assertReferenceChecks: the reference must return a tuple or list of outputs")
        native = _run(op, inputs, device_option, input_device_options)
        names = native.outputs if outputs_to_check is None else [native.outputs[i] for i in outputs_to_check]
        results = []
        for name, want in zip(names, expected, strict=False):
            got = workspace.FetchBlob(name)
            np.testing.assert_allclose(
                got,
                want,
                rtol=threshold,
                atol=threshold if atol is None else atol,
                err_msg=f"{native.type}: output {name!r} differs from the reference",
            )
            results.append(got)
        if grad_reference is not None:
            self._assert_grad_reference_checks(native, inputs, expected, output_to_grad, grad_reference, threshold)
        return results

    def _assert_grad_reference_checks(
        self, native, inputs, reference_outputs, output_to_grad, grad_reference, threshold
    ):
        """Caffe2's gradient half of assertReferenceChecks, in the workspace ``native`` just ran in."""
        if output_to_grad is None:
            raise ValueError("assertReferenceChecks: grad_reference needs output_to_grad (the output to differentiate)")
        grad_name = f"{output_to_grad}_grad"
        grad_ops, grad_map = core.GradientRegistry.GetBackwardPass([native], {output_to_grad: grad_name})
        output_grad = workspace.FetchBlob(output_to_grad)
        expected = grad_reference(output_grad, reference_outputs, inputs)
        workspace.FeedBlob(grad_name, output_grad, native.device_option)
        workspace.RunOperatorsOnce(grad_ops)
        if len(expected) != len(native.inputs):
            raise AssertionError(
                f"assertReferenceChecks: grad_reference returned {len(expected)} gradients for "
                f"{len(native.inputs)} inputs"
            )
        for name, want in zip(native.inputs, expected, strict=True):
            got_name = grad_map.get(name)
            if got_name is None:
                if want is not None:
                    raise AssertionError(f"{native.type}: input {name!r} has no gradient, but the reference gives one")
                continue
            if isinstance(got_name, str):
                values_name, want_values, want_indices = got_name, want, None
            else:  # a GradientSlice
                values_name, (want_values, want_indices) = got_name.values, want
            np.testing.assert_allclose(
                workspace.FetchBlob(str(values_name)),
                want_values,
                rtol=threshold,
                atol=threshold,
                err_msg=f"{native.type}: gradient {values_name!r} differs from the reference",
            )
            if want_indices is not None:
                np.testing.assert_allclose(
                    workspace.FetchBlob(str(got_name.indices)),
                    want_indices,
                    rtol=1e-4,
                    atol=1e-4,
                    err_msg=f"{native.type}: gradient indices {got_name.indices!r} differ from the reference",
                )

    def assertDeviceChecks(  # noqa: N802 - Caffe2's name
        self, device_options, op, inputs, outputs_to_check, input_device_options=None, threshold=0.01
    ):
        """Run ``op`` on every device of ``device_options`` and check that the outputs agree.

        Parameters
        ----------
        device_options : list of caffe2_pb2.DeviceOption
            The devices (``hu.device_options``: the CPU and every OpenCL device).
        op : caffe2_pb2.OperatorDef
            The operator.
        inputs : list of numpy.ndarray
            The input values.
        outputs_to_check : list of int
            Which outputs to compare.
        input_device_options : dict, optional
            ``{input name: DeviceOption}`` for inputs fed elsewhere.
        threshold : float, default 0.01
            Tolerance.

        Raises
        ------
        AssertionError
            If the devices disagree.

        Examples
        --------
        >>> import numpy as np
        >>> from caffe2op.compat import core, hypothesis_test_util as hu
        >>> op = core.CreateOperator("Normalize", "X", "Y")
        >>> hu.HypothesisTestCase().assertDeviceChecks([hu.cpu_do], op, [np.ones((2, 2), np.float32)], [0])
        """
        results = []
        for option in device_options:
            native = _run(op, inputs, option, input_device_options)
            results.append([workspace.FetchBlob(native.outputs[i]) for i in outputs_to_check])
        for other in results[1:]:
            for got, want in zip(other, results[0], strict=True):
                np.testing.assert_allclose(got, want, rtol=threshold, atol=threshold)

    def assertGradientChecks(  # noqa: N802 - Caffe2's name
        self,
        device_option,
        op,
        inputs,
        outputs_to_check,
        outputs_with_grads,
        grad_ops=None,
        threshold=0.005,
        stepsize=0.05,
        input_device_options=None,
        ensure_outputs_are_inferred=False,
    ):
        """Compare the gradient operators' gradient of input ``outputs_to_check`` with finite differences.

        The loss is ``sum(y**2) / 2`` over the outputs ``outputs_with_grads``
        (Caffe2's ``GradientChecker``), so the output gradient is ``y``.

        Parameters
        ----------
        device_option : caffe2_pb2.DeviceOption
            Where to run.
        op : caffe2_pb2.OperatorDef
            The operator.
        inputs : list of numpy.ndarray
            The input values.
        outputs_to_check : int
            The input whose gradient is checked (Caffe2's name).
        outputs_with_grads : list of int
            The outputs the loss is made of.
        grad_ops : list of OperatorDef, optional
            Gradient operators to use instead of the registered maker's.
        threshold : float, default 0.005
            Tolerance.
        stepsize : float, default 0.05
            Finite-difference step.
        input_device_options : dict, optional
            ``{input name: DeviceOption}`` for inputs fed elsewhere.
        ensure_outputs_are_inferred : bool, default False
            Ignored.

        Raises
        ------
        AssertionError
            If the gradients differ.

        Examples
        --------
        >>> import numpy as np
        >>> from caffe2op.compat import core, hypothesis_test_util as hu
        >>> op = core.CreateOperator("Normalize", "X", "Y")
        >>> hu.HypothesisTestCase().assertGradientChecks(hu.cpu_do, op, [np.array([[1.0, 2.0]], np.float32)], 0, [0])
        """
        native = caffe2_pb2.as_native(op)
        x_name = native.inputs[outputs_to_check]
        grad_outputs = [native.outputs[i] for i in outputs_with_grads]
        inputs = [np.array(x) for x in inputs]
        _, ys = _loss_and_outputs(op, inputs, device_option, input_device_options, grad_outputs)
        g_output = [name + "_grad" if name in grad_outputs else None for name in native.outputs]
        ops, g_input = get_gradient_defs(native, g_output) if grad_ops is None else (grad_ops, None)
        _run(op, inputs, device_option, input_device_options)
        for name, y in zip(grad_outputs, ys, strict=True):
            workspace.FeedBlob(name + "_grad", y.astype(workspace.FetchBlob(name).dtype), device_option)
        device = caffe2_pb2._native_device(device_option)
        for grad_op in ops:
            grad_op = caffe2_pb2.as_native(grad_op)
            grad_op.device_option = (
                device if device is not None and device.device_type != DeviceType.CPU else (grad_op.device_option)
            )
            workspace.RunOperatorOnce(grad_op)
        grad_name = g_input[outputs_to_check] if g_input is not None else x_name + "_grad"
        analytic = workspace.FetchBlob(grad_name).astype(np.float64)
        x = inputs[outputs_to_check]
        numeric = np.zeros(x.shape, np.float64)
        for index in np.ndindex(x.shape):
            values = [np.copy(v) for v in inputs]
            values[outputs_to_check][index] += stepsize
            plus, _ = _loss_and_outputs(op, values, device_option, input_device_options, grad_outputs)
            values[outputs_to_check][index] -= 2 * stepsize
            minus, _ = _loss_and_outputs(op, values, device_option, input_device_options, grad_outputs)
            numeric[index] = (plus - minus) / (2 * stepsize)
        np.testing.assert_allclose(
            analytic,
            numeric,
            rtol=threshold,
            atol=threshold,
            err_msg=f"{native.type}: gradient of input {outputs_to_check} differs from finite differences",
        )
