# SPDX-License-Identifier: BSD-3-Clause
"""Operator definitions: devices, data types, :class:`OperatorDef` and :func:`create_operator`.

These mirror Caffe2's protobuf messages (``DeviceOption``, ``OperatorDef``,
``TensorProto.DataType``) as plain Python objects.
"""

import contextlib
import contextvars
import dataclasses
import enum
import numbers

import numpy as np

from . import _tables, schema
from .errors import UnknownOperatorError, unknown_operator_message

__all__ = [
    "DataType",
    "DeviceOption",
    "DeviceType",
    "OperatorDef",
    "create_operator",
    "device_scope",
]


class DeviceType(enum.IntEnum):
    """Kinds of device an operator can run on (Caffe2's numbering).

    ``CPU`` runs the Cython kernels.  ``OPENCL`` runs the OpenCL kernels on
    any OpenCL device (``device_id`` indexes :func:`caffe2op.opencl_devices`).
    ``CUDA`` runs the same OpenCL kernels on the devices of an NVIDIA OpenCL
    platform (``device_id`` indexes those alone).

    Examples
    --------
    >>> from caffe2op import DeviceType
    >>> DeviceType.CPU, int(DeviceType.CUDA)
    (<DeviceType.CPU: 0>, 1)
    """

    CPU = 0
    CUDA = 1
    OPENCL = 4


@dataclasses.dataclass(frozen=True)
class DeviceOption:
    """Where an operator runs: a device type and an index among devices of that type.

    Parameters
    ----------
    device_type : DeviceType or int, default DeviceType.CPU
        The kind of device.
    device_id : int, default 0
        Index of the device among those of ``device_type``.

    Raises
    ------
    TypeError
        If ``device_type`` or ``device_id`` is not an integer kind.
    ValueError
        If ``device_type`` is not a known device type or ``device_id`` is negative.

    Examples
    --------
    >>> from caffe2op import DeviceOption, DeviceType
    >>> DeviceOption(DeviceType.OPENCL, 1)
    DeviceOption(device_type=<DeviceType.OPENCL: 4>, device_id=1)
    >>> DeviceOption() == DeviceOption(DeviceType.CPU, 0)
    True
    """

    device_type: DeviceType = DeviceType.CPU
    device_id: int = 0

    def __post_init__(self):
        if isinstance(self.device_type, bool) or not isinstance(self.device_type, numbers.Integral):
            raise TypeError(
                f"DeviceOption: device_type must be a DeviceType, got "
                f"{type(self.device_type).__name__} ({self.device_type!r})"
            )
        try:
            device_type = DeviceType(int(self.device_type))
        except ValueError:
            known = ", ".join(f"{d.name}={d.value}" for d in DeviceType)
            raise ValueError(f"DeviceOption: unknown device_type {self.device_type!r} (known: {known})") from None
        if isinstance(self.device_id, bool) or not isinstance(self.device_id, numbers.Integral):
            raise TypeError(
                f"DeviceOption: device_id must be an int, got {type(self.device_id).__name__} ({self.device_id!r})"
            )
        if self.device_id < 0:
            raise ValueError(f"DeviceOption: device_id must be >= 0, got {self.device_id}")
        object.__setattr__(self, "device_type", device_type)
        object.__setattr__(self, "device_id", int(self.device_id))


CPU_DEVICE = DeviceOption()


class DataType(enum.IntEnum):
    """Caffe2's ``TensorProto.DataType`` codes, accepted by ``ConstantFill``'s ``dtype``.

    Examples
    --------
    >>> from caffe2op import DataType
    >>> DataType.FLOAT.numpy_dtype
    dtype('float32')
    >>> DataType.from_numpy("int64")
    <DataType.INT64: 10>
    """

    UNDEFINED = 0
    FLOAT = 1
    INT32 = 2
    BYTE = 3
    STRING = 4
    BOOL = 5
    UINT8 = 6
    INT8 = 7
    UINT16 = 8
    INT16 = 9
    INT64 = 10
    FLOAT16 = 12
    DOUBLE = 13

    @property
    def numpy_dtype(self):
        """The NumPy dtype of this code.

        Returns
        -------
        numpy.dtype
            The matching dtype.

        Raises
        ------
        TypeError
            For ``UNDEFINED`` and ``STRING``, which have no numeric dtype.
        """
        try:
            return np.dtype(_DATATYPE_TO_NUMPY[self])
        except KeyError:
            raise TypeError(f"DataType.{self.name} has no NumPy dtype") from None

    @classmethod
    def from_numpy(cls, dtype):
        """The code of a NumPy dtype.

        Parameters
        ----------
        dtype : numpy.dtype or str
            A dtype with a Caffe2 code.

        Returns
        -------
        DataType
            Its code.

        Raises
        ------
        TypeError
            If the dtype has no Caffe2 code.

        Examples
        --------
        >>> import numpy as np
        >>> from caffe2op import DataType
        >>> DataType.from_numpy(np.float16)
        <DataType.FLOAT16: 12>
        """
        dtype = np.dtype(dtype)
        for code, name in _DATATYPE_TO_NUMPY.items():
            if np.dtype(name) == dtype:
                return code
        raise TypeError(f"dtype {dtype} has no Caffe2 DataType code")


_DATATYPE_TO_NUMPY = {
    DataType.FLOAT: "float32",
    DataType.INT32: "int32",
    DataType.BYTE: "uint8",
    DataType.BOOL: "bool",
    DataType.UINT8: "uint8",
    DataType.INT8: "int8",
    DataType.UINT16: "uint16",
    DataType.INT16: "int16",
    DataType.INT64: "int64",
    DataType.FLOAT16: "float16",
    DataType.DOUBLE: "float64",
}


def _blob_names(value, what, op_type):
    """Normalise a blob name or a sequence of them to a list of str."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{op_type}: {what} must be a non-empty blob name, got ''")
        return [value]
    if value is None:
        return []
    try:
        names = list(value)
    except TypeError:
        raise TypeError(
            f"{op_type}: {what} must be a blob name or a list of blob names, got {type(value).__name__}"
        ) from None
    if isinstance(value, dict):  # its keys would be taken silently
        raise TypeError(f"{op_type}: {what} must be a blob name or a list of blob names, got a dict ({value!r})")
    exact = True  # every name a str itself, no subclass: the list is already what is returned
    for name in names:
        if type(name) is not str:
            if not isinstance(name, str):
                raise TypeError(f"{op_type}: {what} must be blob names (str), got {type(name).__name__} ({name!r})")
            exact = False
        if not name:
            raise ValueError(f"{op_type}: {what} must be non-empty blob names, got {names!r}")
    return names if exact else [str(name) for name in names]


def _copied_names(value, what, op_type):
    """:func:`_blob_names` of ``value``, a new list; a list of plain non-empty str is copied without a further call."""
    if type(value) is list:
        for name in value:
            if type(name) is not str or not name:
                return _blob_names(value, what, op_type)
        return value.copy()
    return _blob_names(value, what, op_type)


def _plain_arg(value):
    """Turn NumPy scalars, tuples and 1-D arrays into plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_plain_arg(v) for v in value]
    if isinstance(value, list):
        return [_plain_arg(v) for v in value]
    return value


@dataclasses.dataclass
class OperatorDef:
    """One operator of a net: its type, blob names, arguments and device.

    A plain data class, like Caffe2's ``OperatorDef`` message.  Build it with
    :func:`create_operator` to have it checked against its schema at once, or
    directly with keyword fields (no check), for operator types that have no
    schema, as Caffe2's own Python tests did.

    Parameters
    ----------
    type : str
        Operator type, e.g. ``"SparseNormalize"``.
    inputs : list of str
        Input blob names (a single str is accepted).
    outputs : list of str
        Output blob names (a single str is accepted).
    args : dict
        Arguments by name.
    name : str, default ""
        Optional name of this operator.
    device_option : DeviceOption or None, default None
        Where it runs; None means the CPU.
    engine : str, default ""
        Preferred implementation(s), comma separated.
    is_gradient_op : bool, default False
        True for operators made by a gradient maker.  Metadata: it does not
        take part in ``==``.

    Examples
    --------
    >>> from caffe2op import OperatorDef
    >>> op = OperatorDef(type="Direct", inputs="x", outputs=["y"])
    >>> op.inputs, op.args
    (['x'], {})
    """

    type: str
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    args: dict = dataclasses.field(default_factory=dict)
    name: str = ""
    device_option: DeviceOption = None
    engine: str = ""
    is_gradient_op: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self):
        # Exact types are tested first: a backward pass builds one definition per operator, and the
        # common case (plain str, a list of plain str, no arguments) then costs no further call.
        op_type = self.type
        if type(op_type) is not str and not isinstance(op_type, str) or not op_type:
            raise TypeError(f"OperatorDef: type must be a non-empty str, got {op_type!r}")
        self.inputs = _copied_names(self.inputs, "inputs", op_type)
        self.outputs = _copied_names(self.outputs, "outputs", op_type)
        args = self.args
        if args is None or (type(args) is dict and not args):
            self.args = {}  # (nearly every gradient operator's: no arguments of its own)
        else:
            self.args = {str(k): _plain_arg(v) for k, v in dict(args).items()}
        if type(self.name) is not str and not isinstance(self.name, str):
            raise TypeError(f"{op_type}: name must be a str, got {type(self.name).__name__} ({self.name!r})")
        if type(self.engine) is not str and not isinstance(self.engine, str):
            raise TypeError(
                f"{op_type}: engine must be a str (engine names, comma separated), got "
                f"{type(self.engine).__name__} ({self.engine!r})"
            )
        device_option = self.device_option
        if device_option is not None and not isinstance(device_option, DeviceOption):
            raise TypeError(
                f"{op_type}: device_option must be a DeviceOption or None, got {type(device_option).__name__}"
            )

    @property
    def device(self):
        """The effective :class:`DeviceOption` (the CPU when ``device_option`` is None)."""
        return self.device_option if self.device_option is not None else CPU_DEVICE

    def describe(self):
        """One line such as ``SparseNormalize(w, idx) -> (w)  norm=2.0``.

        Returns
        -------
        str
            A readable summary of the operator.

        Examples
        --------
        >>> import caffe2op
        >>> caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", norm=2.0).describe()
        'SparseNormalize(w, idx) -> (w)  norm=2.0'
        """
        text = f"{self.type}({', '.join(self.inputs)}) -> ({', '.join(self.outputs)})"
        extras = [f"{k}={v!r}" for k, v in sorted(self.args.items())]
        if self.device_option is not None and self.device_option != CPU_DEVICE:
            extras.append(f"device={self.device_option.device_type.name}:{self.device_option.device_id}")
        if self.engine:
            extras.append(f"engine={self.engine!r}")
        if self.name:
            extras.append(f"name={self.name!r}")
        return text + ("  " + " ".join(extras) if extras else "")


def _fresh_copy(op):
    """A copy of ``op`` with lists and a dict of its own (the gradient operators the backward pass renames).

    What ``dataclasses.replace(op, inputs=list(op.inputs), outputs=list(op.outputs), args=dict(op.args))``
    gives, ``is_gradient_op`` kept.  When every field already has the type ``__post_init__`` would give it
    (a definition made by the constructor and left alone: nearly always), the checks are not run again;
    anything else goes through the constructor, which raises what it raises.
    """
    args = op.args
    if (
        type(op) is OperatorDef
        and type(op.type) is str
        and op.type
        and type(op.inputs) is list
        and type(op.outputs) is list
        and type(args) is dict
        and type(op.name) is str
        and type(op.engine) is str
        and (op.device_option is None or isinstance(op.device_option, DeviceOption))
    ):
        for names in (op.inputs, op.outputs):
            for name in names:
                if type(name) is not str or not name:
                    return _checked_copy(op)
        if args:
            for key in args:
                if type(key) is not str:
                    return _checked_copy(op)
            args = {key: _plain_arg(value) for key, value in args.items()}
        # Attributes set one by one, in the constructor's order: the instance keeps sharing its
        # dictionary's keys with every other OperatorDef (a dict filled at once takes ~150 bytes more).
        copy = object.__new__(OperatorDef)
        copy.type = op.type
        copy.inputs = list(op.inputs)
        copy.outputs = list(op.outputs)
        copy.args = args if args else {}
        copy.name = op.name
        copy.device_option = op.device_option
        copy.engine = op.engine
        copy.is_gradient_op = op.is_gradient_op
        return copy
    return _checked_copy(op)


def _checked_copy(op):
    """:func:`_fresh_copy` through the constructor and its checks."""
    is_gradient_op = op.is_gradient_op
    copy = dataclasses.replace(op, inputs=list(op.inputs), outputs=list(op.outputs), args=dict(op.args))
    copy.is_gradient_op = is_gradient_op
    return copy


_DEVICE_SCOPE = contextvars.ContextVar("caffe2op_device_scope", default=None)


@contextlib.contextmanager
def device_scope(device_option):
    """Make ``device_option`` the default device of operators created inside the block.

    Like Caffe2's ``core.DeviceScope``: :func:`create_operator` and the
    :class:`~caffe2op.Net` builders use it when no ``device_option`` is given.

    Parameters
    ----------
    device_option : DeviceOption or None
        The device; None restores the CPU default.

    Yields
    ------
    DeviceOption or None
        The scope's device option.

    Raises
    ------
    TypeError
        If ``device_option`` is not a DeviceOption or None.

    Examples
    --------
    >>> import caffe2op
    >>> opt = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)
    >>> with caffe2op.device_scope(opt):
    ...     op = caffe2op.create_operator("StopGradient", "x", "y")
    >>> op.device_option.device_type.name
    'OPENCL'
    """
    if device_option is not None and not isinstance(device_option, DeviceOption):
        raise TypeError(f"device_scope: expected a DeviceOption or None, got {type(device_option).__name__}")
    token = _DEVICE_SCOPE.set(device_option)
    try:
        yield device_option
    finally:
        _DEVICE_SCOPE.reset(token)


def current_device_scope():
    """The device option of the innermost :func:`device_scope`, or None."""
    return _DEVICE_SCOPE.get()


def create_operator(op_type, inputs, outputs, *, name="", device_option=None, engine="", **args):
    """Create an :class:`OperatorDef` and check it against its schema at once.

    Parameters
    ----------
    op_type : str
        Operator type, e.g. ``"StopGradient"``.
    inputs : str or list of str
        Input blob names.
    outputs : str or list of str
        Output blob names.
    name : str, default ""
        Optional operator name.
    device_option : DeviceOption, optional
        Where the operator runs; defaults to the current :func:`device_scope`
        (the CPU outside any scope).
    engine : str, default ""
        Preferred engine(s), comma separated.
    **args
        Operator arguments, checked against the schema (types, ranges, unknown
        names).

    Returns
    -------
    OperatorDef
        The checked definition.

    Raises
    ------
    SchemaError
        If the definition breaks the schema (a ``ValueError``; argument type
        errors are also ``TypeError``).
    UnknownOperatorError
        If ``op_type`` has no schema, implementation or gradient anywhere.
    TypeError
        If blob names are not strings (or are given as a dict), or ``name``
        or ``engine`` is not a str.
    ValueError
        If a blob name is empty.

    Examples
    --------
    >>> import caffe2op
    >>> op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", norm=2.0)
    >>> op.type, op.inputs, op.outputs, op.args
    ('SparseNormalize', ['w', 'idx'], ['w'], {'norm': 2.0})
    """
    if device_option is None:
        device_option = current_device_scope()
    op_def = OperatorDef(
        type=op_type,
        inputs=_blob_names(inputs, "inputs", op_type),
        outputs=_blob_names(outputs, "outputs", op_type),
        args=args,
        name=name,
        device_option=device_option,
        engine=engine,
    )
    op_schema = schema.get_schema(op_type, default=None)
    if op_schema is not None:
        op_schema.verify(op_def)
    else:
        known = _tables.known_operator_types()
        if op_type not in known:
            raise UnknownOperatorError(unknown_operator_message(op_type, known))
    return op_def
