# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``DeviceOption``, ``DeviceScope`` and ``CreateOperator`` (re-exported by :mod:`caffe2op.compat.core`)."""

import contextlib
import numbers
import warnings

from .. import _tables
from .. import core as _core
from ..schema import get_schema
from . import caffe2_pb2
from ._names import _rectify


class CompatWarning(UserWarning):
    """Caffe2 code did something caffe2op does differently (the message says what happened).

    Examples
    --------
    >>> import warnings
    >>> from caffe2op.compat import core
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     op = core.CreateOperator("StopGradient", "x", "y", bogus=1)
    >>> caught[0].category is core.CompatWarning, op.native.args
    (True, {})
    """


# --- devices -------------------------------------------------------------------------------------


def DeviceOption(device_type, device_id=0, random_seed=None, node_name=None, numa_node_id=None, extra_info=None):  # noqa: N802
    """A ``caffe2_pb2.DeviceOption`` (Caffe2's ``core.DeviceOption``).

    Parameters
    ----------
    device_type : int
        ``caffe2_pb2.CPU``, ``CUDA`` or ``OPENCL``.
    device_id : int, default 0
        Index among devices of that type.
    random_seed, node_name, numa_node_id, extra_info : optional
        Accepted for compatibility; caffe2op does not use them.

    Returns
    -------
    caffe2_pb2.DeviceOption
        The option.

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2, core
    >>> core.DeviceOption(caffe2_pb2.OPENCL, 1).native
    DeviceOption(device_type=<DeviceType.OPENCL: 4>, device_id=1)
    """
    return caffe2_pb2.DeviceOption(device_type, device_id, random_seed=random_seed or 0, node_name=node_name or "")


@contextlib.contextmanager
def DeviceScope(scope, node_name=None):  # noqa: N802 - Caffe2's name
    """Operators created inside get ``scope`` as their device option (Caffe2's ``core.DeviceScope``).

    Parameters
    ----------
    scope : caffe2_pb2.DeviceOption or caffe2op.DeviceOption or None
        The device.
    node_name : str, optional
        Ignored.

    Yields
    ------
    None

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2, core
    >>> with core.DeviceScope(core.DeviceOption(caffe2_pb2.OPENCL, 0)):
    ...     op = core.CreateOperator("StopGradient", "x", "y")
    >>> op.device_option.device_type
    4
    """
    with _core.device_scope(caffe2_pb2._native_device(scope)):
        yield


def CurrentDeviceScope():  # noqa: N802 - Caffe2's name
    """The device option of the current :func:`DeviceScope` (a message), or None."""
    native = _core.current_device_scope()
    return None if native is None else caffe2_pb2.DeviceOption(native.device_type, native.device_id)


# --- operators -----------------------------------------------------------------------------------


def IsOperator(op_type):  # noqa: N802 - Caffe2's name
    """Whether ``op_type`` is an operator type caffe2op knows (implementation, schema or gradient).

    Parameters
    ----------
    op_type : str
        The type.

    Returns
    -------
    bool
        True if known.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> core.IsOperator("SparseNormalize"), core.IsOperator("NoSuchThing")
    (True, False)
    """
    return op_type in _tables.known_operator_types()


def IsOperatorWithEngine(op_type, engine):  # noqa: N802 - Caffe2's name
    """Whether ``op_type`` has an implementation for ``engine`` (``"DEFAULT"``: the default engine) on some device."""
    from ..registry import _REGISTRIES

    engine = "" if engine == "DEFAULT" else engine
    return any((op_type, engine) in table.snapshot() for table in _REGISTRIES.values())


def _caffe2_args(op_type, args):
    """Caffe2's reading of Python arguments: bools from ints, undeclared ones dropped (with a warning)."""
    schema = get_schema(op_type, None)
    if schema is None:
        return args
    declared = {a.name: a for a in schema.args}
    unknown = sorted(name for name in args if name not in declared)
    if unknown:
        warnings.warn(
            f"{op_type}: ignoring argument(s) {', '.join(unknown)} that its schema does not declare, as Caffe2 "
            f"does (the native caffe2op API rejects them)",
            CompatWarning,
            stacklevel=3,
        )
    kept = {}
    for name, value in args.items():
        if name not in declared:
            continue
        if declared[name].type is bool and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = bool(value)  # Caffe2 reads a bool from the int field: any non-zero is true
        kept[name] = value
    return kept


def CreateOperator(  # noqa: N802 - Caffe2's name
    operator_type,
    inputs,
    outputs,
    name="",
    control_input=None,
    device_option=None,
    arg=None,
    engine=None,
    debug_info=None,
    **kwargs,
):
    """An OperatorDef message (Caffe2's ``core.CreateOperator``), not checked until it runs.

    Parameters
    ----------
    operator_type : str
        The type.
    inputs, outputs : str, BlobReference or list of them
        Blob names.
    name : str, default ""
        Operator name.
    control_input : list, optional
        Ignored with a :class:`CompatWarning` (operators run in order).
    device_option : caffe2_pb2.DeviceOption, optional
        Where it runs; the current :func:`DeviceScope` otherwise.
    arg : list of caffe2_pb2.Argument, optional
        Arguments as messages (added before ``kwargs``).
    engine : str, optional
        Engine preference.
    debug_info : str, optional
        Ignored.
    **kwargs
        Arguments.

    Returns
    -------
    caffe2_pb2.OperatorDef
        The definition (a view of a :class:`caffe2op.OperatorDef`).

    Raises
    ------
    TypeError
        If blob names are not str.
    ValueError
        If an argument is None (as Caffe2).

    Warns
    -----
    CompatWarning
        When arguments the schema does not declare, or control inputs, are dropped.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> op = core.CreateOperator("SparseNormalize", ["w", "idx"], ["w"], use_max_norm=1, norm=2.0)
    >>> op.type, list(op.input), op.native.args
    ('SparseNormalize', ['w', 'idx'], {'use_max_norm': True, 'norm': 2.0})
    """
    if control_input:
        warnings.warn(
            f"{operator_type}: ignoring control_input {control_input!r}: caffe2op runs a net's operators in "
            f"order, so there is nothing to schedule",
            CompatWarning,
            stacklevel=2,
        )
    args = {}
    for a in arg or ():
        args[a.name] = a._get_value()
    for key, value in kwargs.items():
        if value is None:
            # Caffe2's MakeArgument cannot store None.
            raise ValueError(f"{operator_type}: argument {key!r} is None, which an argument cannot hold")
        args[key] = value
    if device_option is None:
        device = _core.current_device_scope()
    else:
        device = caffe2_pb2._native_device(device_option)
    op = _core.OperatorDef(
        type=operator_type,
        inputs=[str(n) for n in _rectify(inputs)],
        outputs=[str(n) for n in _rectify(outputs)],
        args=_caffe2_args(operator_type, args),
        name=name or "",
        device_option=device,
        engine=engine or "",
    )
    return caffe2_pb2.view(op)
