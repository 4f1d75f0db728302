# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's protobuf messages as views over caffe2op's objects: ``OperatorDef``, ``DeviceOption``, ``NetDef``.

Caffe2 code reads and writes operator definitions by their protobuf field
names (``op.type``, ``op.input``, ``op.arg``, ``op.device_option.device_type``
...).  The classes here give those names to caffe2op's own
:class:`caffe2op.OperatorDef`: an :class:`OperatorDef` holds one and every
read and write goes to it (``op.input`` *is* its ``inputs`` list), so the
two never drift apart.  Only the fields caffe2op has are kept;
``debug_info`` and ``control_input`` read as empty and writes to them are
ignored.

Examples
--------
>>> from caffe2op.compat import caffe2_pb2, core
>>> op = core.CreateOperator("Sum", ["a", "b"], "s")
>>> op.input.append("c")
>>> op.native.inputs
['a', 'b', 'c']
>>> op.device_option.device_type = caffe2_pb2.OPENCL
>>> op.native.device_option
DeviceOption(device_type=<DeviceType.OPENCL: 4>, device_id=0)
"""

import copy as _copy
import numbers

from .. import core as _native_core
from ..core import DataType, DeviceType

__all__ = ["Argument", "DeviceOption", "NetDef", "OperatorDef", "TensorProto"]

#: Device types (Caffe2's numbering; ``OPENCL`` is caffe2op's addition).
CPU = int(DeviceType.CPU)
CUDA = int(DeviceType.CUDA)
OPENCL = int(DeviceType.OPENCL)


class TensorProto:
    """Caffe2's ``TensorProto``: only its ``DataType`` codes (``TensorProto.FLOAT`` ...), for ``ConstantFill``.

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2
    >>> caffe2_pb2.TensorProto.FLOAT, caffe2_pb2.TensorProto.INT64
    (1, 10)
    """


for _code in DataType:
    setattr(TensorProto, _code.name, int(_code))


def _native_device(option):
    """A caffe2op DeviceOption (or None) from a compat or native one."""
    if option is None or isinstance(option, _native_core.DeviceOption):
        return option
    if isinstance(option, DeviceOption):
        return option.native
    raise TypeError(f"expected a caffe2_pb2.DeviceOption, got {type(option).__name__} ({option!r})")


class DeviceOption:
    """Caffe2's ``DeviceOption`` message: ``device_type`` and ``device_id``, mutable.

    Standalone, it holds its own fields.  Read from an :class:`OperatorDef`
    (``op.device_option``), it is a view: writes change the operator's
    device option.  ``random_seed`` and ``node_name`` are accepted and kept
    here, but caffe2op does not use them.

    Parameters
    ----------
    device_type : int, default CPU
        ``CPU``, ``CUDA`` or ``OPENCL``.
    device_id : int, default 0
        Index among devices of that type.
    random_seed : int, default 0
        Kept, not used.
    node_name : str, default ""
        Kept, not used.

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2
    >>> opt = caffe2_pb2.DeviceOption()
    >>> opt.device_type = caffe2_pb2.CUDA
    >>> opt.device_id = 1
    >>> opt.native
    DeviceOption(device_type=<DeviceType.CUDA: 1>, device_id=1)
    """

    def __init__(self, device_type=CPU, device_id=0, *, random_seed=0, node_name=""):
        object.__setattr__(self, "_owner", None)
        object.__setattr__(self, "_own", _native_core.DeviceOption(device_type, device_id))
        object.__setattr__(self, "random_seed", random_seed)
        object.__setattr__(self, "node_name", node_name)

    @classmethod
    def _of(cls, op):
        """The view of ``op``'s device option."""
        option = cls()
        object.__setattr__(option, "_owner", op)
        return option

    @property
    def native(self):
        """The equivalent :class:`caffe2op.DeviceOption`."""
        if self._owner is None:
            return self._own
        return self._owner.device

    def _set(self, **change):
        import dataclasses

        new = dataclasses.replace(self.native, **change)
        if self._owner is None:
            object.__setattr__(self, "_own", new)
        else:
            self._owner.device_option = new

    @property
    def device_type(self):
        """The device type (int)."""
        return int(self.native.device_type)

    @device_type.setter
    def device_type(self, value):
        self._set(device_type=value)

    @property
    def device_id(self):
        """The device index (int)."""
        return self.native.device_id

    @device_id.setter
    def device_id(self, value):
        self._set(device_id=value)

    @property
    def cuda_gpu_id(self):
        """Caffe2's older name of ``device_id``."""
        return self.device_id

    @cuda_gpu_id.setter
    def cuda_gpu_id(self, value):
        self.device_id = value

    def CopyFrom(self, other):  # noqa: N802 - protobuf's name
        """Take the fields of ``other`` (a compat or caffe2op DeviceOption).

        Parameters
        ----------
        other : DeviceOption or caffe2op.DeviceOption
            The source.

        Raises
        ------
        TypeError
            If ``other`` is not a device option.

        Examples
        --------
        >>> from caffe2op.compat import caffe2_pb2
        >>> opt = caffe2_pb2.DeviceOption()
        >>> opt.CopyFrom(caffe2_pb2.DeviceOption(caffe2_pb2.OPENCL, 1))
        >>> opt.device_type, opt.device_id
        (4, 1)
        """
        native = _native_device(other)
        if self._owner is None:
            object.__setattr__(self, "_own", native)
        else:
            self._owner.device_option = native

    def HasField(self, name):  # noqa: N802 - protobuf's name
        """Whether field ``name`` differs from its default.

        Parameters
        ----------
        name : str
            A field name.

        Returns
        -------
        bool
            True if set to a non-default value.

        Examples
        --------
        >>> from caffe2op.compat import caffe2_pb2
        >>> caffe2_pb2.DeviceOption(caffe2_pb2.CUDA).HasField("device_type")
        True
        """
        return bool(getattr(self, name))

    def __setattr__(self, name, value):
        if name not in ("device_type", "device_id", "cuda_gpu_id", "random_seed", "node_name"):
            raise AttributeError(f"DeviceOption has no field {name!r}")
        object.__setattr__(self, name, value)  # the properties write through to the operator

    def __eq__(self, other):
        if isinstance(other, (DeviceOption, _native_core.DeviceOption)):
            return self.native == _native_device(other)
        return NotImplemented

    __hash__ = None

    def __str__(self):
        fields = []
        if self.device_type:
            fields.append(f"device_type: {self.device_type}")
        if self.device_id:
            fields.append(f"device_id: {self.device_id}")
        return "\n".join(fields) + ("\n" if fields else "")

    def __repr__(self):
        return f"caffe2_pb2.DeviceOption(device_type={self.device_type}, device_id={self.device_id})"


def _arg_fields(value):
    """The protobuf field a Python value lands in (Caffe2's ``utils.MakeArgument``)."""
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return "i"
    if isinstance(value, numbers.Real):
        return "f"
    if isinstance(value, (str, bytes)):
        return "s"
    if isinstance(value, list):
        if all(isinstance(v, (str, bytes)) for v in value) and value:
            return "strings"
        if all(isinstance(v, numbers.Integral) for v in value):
            return "ints"
        return "floats"
    return None


class Argument:
    """Caffe2's ``Argument`` message: ``name`` and one of ``f``, ``i``, ``s``, ``floats``, ``ints``, ``strings``.

    Read from ``op.arg``, it is a view of one entry of the operator's
    ``args`` dict; standalone (``Argument()``, then ``op.arg.extend([a])``)
    it holds its value until it is added.

    Parameters
    ----------
    name : str, default ""
        The argument's name.
    **fields
        At most one value field: ``f``, ``i``, ``s``, ``floats``, ``ints``
        or ``strings``.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> op = core.CreateOperator("SparseNormalize", ["w", "idx"], "w", norm=2.0)
    >>> [(a.name, a.f) for a in op.arg]
    [('norm', 2.0)]
    >>> op.arg[0].f = 3.0
    >>> op.native.args
    {'norm': 3.0}
    """

    _DEFAULTS = {"f": 0.0, "i": 0, "s": b"", "floats": [], "ints": [], "strings": []}

    def __init__(self, name="", **fields):
        object.__setattr__(self, "_owner", None)  # the operator whose args this entry views
        object.__setattr__(self, "_target", None)  # the operator it joins once it has a value
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_value", None)
        for key, value in fields.items():
            setattr(self, key, value)

    @classmethod
    def _bound(cls, op, name="", *, pending=False, **fields):
        """An entry of ``op.args`` (``pending``: one that joins ``op`` once it has a value)."""
        arg = cls()
        object.__setattr__(arg, "_target" if pending else "_owner", op)
        object.__setattr__(arg, "_name", name)
        for key, value in fields.items():
            setattr(arg, key, value)
        return arg

    def _get_value(self):
        if self._owner is not None:
            return self._owner.args.get(self._name)
        return self._value

    def _put_value(self, value):
        if self._owner is None and self._target is not None:
            object.__setattr__(self, "_owner", self._target)
        if self._owner is not None:
            self._owner.args[self._name] = value
        else:
            object.__setattr__(self, "_value", value)

    @property
    def name(self):
        """The argument's name (str)."""
        return self._name

    def __getattr__(self, field):
        if field in Argument._DEFAULTS:
            value = self._get_value()
            if _arg_fields(value) != field:
                return _copy.copy(Argument._DEFAULTS[field])
            if field == "s":
                return value.encode() if isinstance(value, str) else value
            if field == "strings":
                return [v.encode() if isinstance(v, str) else v for v in value]
            if field == "i":
                return int(value)
            return value
        raise AttributeError(f"Argument has no field {field!r}")

    def __setattr__(self, field, value):
        if field == "name":
            if self._owner is not None:
                args = self._owner.args
                if self._name in args:
                    args[value] = args.pop(self._name)
            object.__setattr__(self, "_name", value)
            return
        if field not in Argument._DEFAULTS:
            raise AttributeError(f"Argument has no field {field!r}")
        if field == "s" and isinstance(value, bytes):
            value = value.decode()
        elif field == "strings":
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        elif field in ("floats", "ints"):
            value = list(value)
        self._put_value(value)

    def HasField(self, field):  # noqa: N802 - protobuf's name
        """Whether the value is stored in ``field`` (Caffe2's ``MakeArgument`` choice of field).

        Parameters
        ----------
        field : str
            ``"name"``, ``"f"``, ``"i"``, ``"s"``, ``"floats"``, ``"ints"`` or ``"strings"``.

        Returns
        -------
        bool
            True if the value lives in that field.

        Examples
        --------
        >>> from caffe2op.compat import caffe2_pb2
        >>> arg = caffe2_pb2.Argument("k", i=3)
        >>> arg.HasField("i"), arg.HasField("f")
        (True, False)
        """
        return field == "name" and bool(self._name) or _arg_fields(self._get_value()) == field

    def __eq__(self, other):
        if isinstance(other, Argument):
            return (self.name, self._get_value()) == (other.name, other._get_value())
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"Argument(name={self.name!r}, value={self._get_value()!r})"


class _ArgList:
    """``op.arg``: the operator's ``args`` dict seen as a repeated Argument field."""

    def __init__(self, op):
        self._op = op

    def __iter__(self):
        return iter([Argument._bound(self._op, name) for name in list(self._op.args)])

    def __len__(self):
        return len(self._op.args)

    def __getitem__(self, index):
        return list(self)[index]

    def add(self, **fields):
        """A new argument of this operator (set its ``name`` first, then its value)."""
        return Argument._bound(self._op, pending=True, **fields)

    def extend(self, args):
        """Add standalone :class:`Argument` objects."""
        for arg in args:
            self.append(arg)

    def append(self, arg):
        """Add one standalone :class:`Argument`."""
        if not isinstance(arg, Argument):
            raise TypeError(f"op.arg takes Argument objects, got {type(arg).__name__}")
        self._op.args[arg.name] = arg._get_value()

    def __delitem__(self, index):
        for arg in self[index] if isinstance(index, slice) else [self[index]]:
            del self._op.args[arg.name]

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return repr(list(self))


class OperatorDef:
    """Caffe2's ``OperatorDef`` message: a view of a :class:`caffe2op.OperatorDef` with protobuf field names.

    ``type``, ``name``, ``engine``, ``is_gradient_op`` read and write the
    operator's fields; ``input`` and ``output`` are its ``inputs`` and
    ``outputs`` lists themselves; ``arg`` views its ``args``;
    ``device_option`` views its device option.  ``native`` is the
    operator.

    Parameters
    ----------
    type : str, optional
        Operator type (a definition without one cannot run).
    **fields
        ``input``, ``output``, ``name``, ``engine``, ``device_option``,
        ``is_gradient_op``, ``arg`` (a list of Argument).

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2
    >>> op = caffe2_pb2.OperatorDef(type="StopGradient")
    >>> op.input.extend(["x"]); op.output.append("y")
    >>> op.native.describe()
    'StopGradient(x) -> (y)'
    """

    __slots__ = ("_op",)

    def __init__(self, type="", **fields):  # noqa: A002 - protobuf's name
        object.__setattr__(self, "_op", _blank_operator())
        if type:
            self.type = type
        for key, value in fields.items():
            if key in ("input", "output"):
                getattr(self, key).extend(value)
            elif key == "arg":
                self.arg.extend(value)
            elif key == "device_option":
                self.device_option.CopyFrom(value)
            else:
                setattr(self, key, value)

    @property
    def native(self):
        """The :class:`caffe2op.OperatorDef` this message shows."""
        return self._op

    @property
    def type(self):  # noqa: A003 - protobuf's name
        """Operator type (str)."""
        return self._op.type

    @type.setter
    def type(self, value):  # noqa: A003
        if not isinstance(value, str) or not value:
            raise TypeError(f"OperatorDef.type must be a non-empty str, got {value!r}")
        self._op.type = value

    @property
    def name(self):
        """Operator name (str)."""
        return self._op.name

    @name.setter
    def name(self, value):
        self._op.name = str(value)

    @property
    def engine(self):
        """Engine preference (str)."""
        return self._op.engine

    @engine.setter
    def engine(self, value):
        self._op.engine = str(value)

    @property
    def is_gradient_op(self):
        """Whether a gradient maker made it (bool)."""
        return self._op.is_gradient_op

    @is_gradient_op.setter
    def is_gradient_op(self, value):
        self._op.is_gradient_op = bool(value)

    @property
    def input(self):  # noqa: A003 - protobuf's name
        """Input blob names: the operator's own ``inputs`` list."""
        return self._op.inputs

    @property
    def output(self):
        """Output blob names: the operator's own ``outputs`` list."""
        return self._op.outputs

    @property
    def arg(self):
        """The arguments, as :class:`Argument` views."""
        return _ArgList(self._op)

    @property
    def device_option(self):
        """The device option, as a :class:`DeviceOption` view (CPU when unset)."""
        return DeviceOption._of(self._op)

    @property
    def debug_info(self):
        """Always ``""`` (caffe2op keeps no debug info); writes are ignored."""
        return ""

    @property
    def control_input(self):
        """Always empty (caffe2op has no control inputs)."""
        return []

    def HasField(self, name):  # noqa: N802 - protobuf's name
        """Whether field ``name`` is set (``device_option``: whether the operator has one).

        Parameters
        ----------
        name : str
            A singular field.

        Returns
        -------
        bool
            True if set.

        Raises
        ------
        ValueError
            If the message has no such singular field (as protobuf).

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> core.CreateOperator("StopGradient", "x", "y").HasField("device_option")
        False
        """
        if name == "device_option":
            return self._op.device_option is not None
        if name in ("type", "name", "engine", "is_gradient_op"):
            return bool(getattr(self, name))
        if name == "debug_info":
            return False
        raise ValueError(f'Protocol message OperatorDef has no singular "{name}" field.')

    def ClearField(self, name):  # noqa: N802 - protobuf's name
        """Reset field ``name`` to its default.

        Parameters
        ----------
        name : str
            A field.

        Raises
        ------
        ValueError
            If the message has no such field.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> op = core.CreateOperator("StopGradient", "x", "y", engine="FAST")
        >>> op.ClearField("engine"); op.native.engine
        ''
        """
        if name == "device_option":
            self._op.device_option = None
        elif name in ("input", "output"):
            del getattr(self, name)[:]
        elif name == "arg":
            self._op.args.clear()
        elif name in ("name", "engine"):
            setattr(self, name, "")
        elif name == "is_gradient_op":
            self.is_gradient_op = False
        elif name not in ("debug_info", "control_input"):
            raise ValueError(f'Protocol message OperatorDef has no "{name}" field.')

    def CopyFrom(self, other):  # noqa: N802 - protobuf's name
        """Take every field of ``other`` (an OperatorDef message or a caffe2op OperatorDef).

        Parameters
        ----------
        other : OperatorDef or caffe2op.OperatorDef
            The source; its lists and arguments are copied.

        Examples
        --------
        >>> from caffe2op.compat import caffe2_pb2, core
        >>> op = caffe2_pb2.OperatorDef()
        >>> op.CopyFrom(core.CreateOperator("StopGradient", "x", "y"))
        >>> op.native.describe()
        'StopGradient(x) -> (y)'
        """
        source = as_native(other)
        target = self._op
        target.type = source.type
        target.inputs[:] = source.inputs
        target.outputs[:] = source.outputs
        target.args.clear()
        target.args.update(_copy.deepcopy(source.args))
        target.name, target.engine = source.name, source.engine
        target.device_option, target.is_gradient_op = source.device_option, source.is_gradient_op

    def __setattr__(self, name, value):
        if name in ("debug_info", "control_input"):
            return
        if name in ("input", "output", "arg", "device_option") or not hasattr(type(self), name):
            raise AttributeError(
                f"Assignment not allowed to field {name!r} in protocol message object (use extend / CopyFrom)"
                if hasattr(type(self), name)
                else f"OperatorDef has no field {name!r}"
            )
        object.__setattr__(self, name, value)

    def __eq__(self, other):
        if isinstance(other, (OperatorDef, _native_core.OperatorDef)):
            mine, theirs = self._op, as_native(other)
            # Protobuf equality includes is_gradient_op (caffe2op's == leaves it out).
            return mine == theirs and mine.is_gradient_op == theirs.is_gradient_op
        return NotImplemented

    __hash__ = None

    def __str__(self):
        op = self._op
        lines = [f'input: "{name}"' for name in op.inputs] + [f'output: "{name}"' for name in op.outputs]
        if op.name:
            lines.append(f'name: "{op.name}"')
        lines.append(f'type: "{op.type}"')
        for key, value in op.args.items():
            lines.append(f'arg {{\n  name: "{key}"\n  {_arg_fields(value) or "value"}: {value!r}\n}}')
        if op.device_option is not None:
            inner = str(self.device_option).strip().replace("\n", "\n  ")
            lines.append(f"device_option {{\n  {inner}\n}}" if inner else "device_option {\n}")
        if op.engine:
            lines.append(f'engine: "{op.engine}"')
        if op.is_gradient_op:
            lines.append("is_gradient_op: true")
        return "\n".join(lines) + "\n"

    def __repr__(self):
        return f"caffe2_pb2.OperatorDef({self._op.describe()!r})"


def _blank_operator():
    """A caffe2op OperatorDef whose type is still to be set (protobuf messages start empty)."""
    op = _native_core.OperatorDef.__new__(_native_core.OperatorDef)
    op.type, op.inputs, op.outputs, op.args = "", [], [], {}
    op.name, op.device_option, op.engine, op.is_gradient_op = "", None, "", False
    return op


def as_native(op):
    """The caffe2op OperatorDef of an OperatorDef message (a caffe2op one is returned as it is).

    Raises
    ------
    TypeError
        If ``op`` is neither.
    """
    if isinstance(op, OperatorDef):
        return op.native
    if isinstance(op, _native_core.OperatorDef):
        return op
    raise TypeError(f"expected an OperatorDef, got {type(op).__name__} ({op!r})")


def view(op):
    """An OperatorDef message showing the caffe2op OperatorDef ``op``."""
    if isinstance(op, OperatorDef):
        return op
    message = OperatorDef.__new__(OperatorDef)
    object.__setattr__(message, "_op", as_native(op))
    return message


class _OpList:
    """``net_def.op``: a net's operator list seen as a repeated OperatorDef field."""

    def __init__(self, ops):
        self._ops = ops

    def __len__(self):
        return len(self._ops)

    def __iter__(self):
        return iter([view(op) for op in self._ops])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [view(op) for op in self._ops[index]]
        return view(self._ops[index])

    def extend(self, ops):
        """Append operators (messages or caffe2op OperatorDefs)."""
        self._ops.extend(as_native(op) for op in ops)

    def append(self, op):
        """Append one operator."""
        self._ops.append(as_native(op))

    def add(self):
        """Append an empty operator and return it."""
        op = _blank_operator()
        self._ops.append(op)
        return view(op)

    def __delitem__(self, index):
        del self._ops[index]

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return repr(list(self))


class NetDef:
    """Caffe2's ``NetDef`` message: ``name``, ``op``, ``external_input``, ``external_output`` of a net.

    ``Net.Proto()`` returns one that views the net: ``op`` is the net's
    operator list, the external lists are the net's own.

    Parameters
    ----------
    name : str, default ""
        Name of the net.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> net = core.Net("doc_netdef")
    >>> _ = net.StopGradient("x", "y")
    >>> proto = net.Proto()
    >>> proto.name, [op.type for op in proto.op], list(proto.external_input)
    ('doc_netdef', ['StopGradient'], ['x'])
    """

    def __init__(self, name=""):
        self.name = name
        self._ops = []
        self.external_input = []
        self.external_output = []

    @classmethod
    def _of(cls, name, ops, external_input, external_output):
        """A NetDef sharing a net's lists (a view)."""
        net_def = cls(name)
        net_def._ops, net_def.external_input, net_def.external_output = ops, external_input, external_output
        return net_def

    @property
    def op(self):
        """The operators, as OperatorDef messages (views)."""
        return _OpList(self._ops)

    def CopyFrom(self, other):  # noqa: N802 - protobuf's name
        """Take every field of another NetDef (operators are copied).

        Parameters
        ----------
        other : NetDef
            The source.

        Examples
        --------
        >>> from caffe2op.compat import caffe2_pb2, core
        >>> net = core.Net("doc_copy_from")
        >>> _ = net.StopGradient("x", "y")
        >>> copy = caffe2_pb2.NetDef()
        >>> copy.CopyFrom(net.Proto())
        >>> copy.name, len(copy.op)
        ('doc_copy_from', 1)
        """
        self.name = other.name
        self._ops[:] = [_copy.deepcopy(op) for op in other._ops]
        self.external_input[:] = list(other.external_input)
        self.external_output[:] = list(other.external_output)

    def __str__(self):
        parts = [f'name: "{self.name}"']
        parts += ["op {\n  " + str(op).strip().replace("\n", "\n  ") + "\n}" for op in self.op]
        parts += [f'external_input: "{name}"' for name in self.external_input]
        parts += [f'external_output: "{name}"' for name in self.external_output]
        return "\n".join(parts) + "\n"
