# SPDX-License-Identifier: BSD-3-Clause
"""The workspace: named blobs, and running operators and nets on them."""

import copy

import numpy as np

from ._tables import registry_generation
from .backward import AUTOGEN_GRAD_SUFFIX
from .core import DeviceOption, OperatorDef, current_device_scope
from .devices import backend_for, backend_of_value
from .errors import MissingBlobError, missing_blob_message
from .registry import lookup_operator_class
from .schema import get_schema

__all__ = ["Workspace"]

# Prepared operator definitions a workspace remembers (a net of this many operators stays prepared).
_MAX_PREPARED = 1 << 16


def _check_blob_name(name, what):
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what}: blob name must be a non-empty str, got {name!r}")


def _add_note(err, note):
    if hasattr(err, "add_note"):  # Python >= 3.11
        err.add_note(note)


def _explain_seed(err, op_def, blobs):
    """Say so when a dtype error involves a float32 gradient seed made by add_gradient_operators."""
    if not isinstance(err, TypeError):
        return
    for name in op_def.inputs:
        seed = blobs.get(name)
        if name.endswith(AUTOGEN_GRAD_SUFFIX) and getattr(seed, "dtype", None) == np.float32:
            y = name[: -len(AUTOGEN_GRAD_SUFFIX)]
            _add_note(
                err,
                f"{name!r} is the gradient seed that add_gradient_operators generated for {y!r}: a float32 "
                f"ConstantFill, as in Caffe2, whatever the dtype of {y!r}. Ask for another dtype with "
                f"net.add_gradient_operators([{y!r}], seed_dtype=np.float64), or give your own gradient "
                f"blob: net.add_gradient_operators({{{y!r}: 'my_{y}_grad'}}).",
            )
            return


class Workspace:
    """Named blobs (arrays on a device) and the operators that read and write them.

    Like Caffe2's workspace: :meth:`feed_blob` copies data in, operators
    update blobs in place or replace them, and :meth:`fetch_blob` copies a
    blob out as a NumPy array (or, with ``copy=False``, returns a read-only
    view of a CPU blob).

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> ws = caffe2op.Workspace()
    >>> ws.feed_blob("w", np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32))
    >>> ws.feed_blob("idx", np.array([0, 1]))
    >>> ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w"))
    >>> ws.fetch_blob("w")
    array([[0.6, 0.8],
           [0.3, 0.4]], dtype=float32)
    >>> ws.blobs()
    ['idx', 'w']
    """

    def __init__(self):
        self._blobs = {}
        # id(op_def) -> (content it had, implementation class, resolved args, backend): a definition
        # run again unchanged (every training step) skips the schema check and the registry lookup.
        self._prepared = {}

    def feed_blob(self, name, value, device_option=None):
        """Store a copy of ``value`` under ``name`` on a device.

        Parameters
        ----------
        name : str
            Blob name; an existing blob of that name is replaced.
        value : array_like or pyopencl.array.Array
            The data (copied).
        device_option : DeviceOption or str, optional
            Where the blob lives: a DeviceOption or a device name of the
            functional API (``"cpu"``, ``"opencl"``, ``"opencl:N"``,
            ``"cuda"``, ``"cuda:N"``).  Defaults to the current
            :func:`~caffe2op.device_scope`, else the device ``value`` already
            lives on (the CPU for host data).

        Raises
        ------
        TypeError
            If ``name`` is not a str, ``value`` is not numeric data, or
            ``device_option`` is neither a DeviceOption nor a device name.
        RuntimeError
            If ``device_option`` names an OpenCL/CUDA device that is not available.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> x = np.array([1.0, 2.0])
        >>> ws.feed_blob("x", x)
        >>> x[0] = 100.0  # the blob is a copy
        >>> ws.fetch_blob("x")
        array([1., 2.])
        >>> ws.feed_blob("n", [1, 2, 3])  # anything NumPy can turn into an array
        >>> ws.fetch_blob("n").dtype
        dtype('int64')
        """
        _check_blob_name(name, "feed_blob")
        if isinstance(device_option, str):
            from . import opencl  # the device-name vocabulary of the functional API

            try:
                device_option = opencl.resolve_device(device_option)
            except ValueError as err:
                raise TypeError(f"feed_blob: blob {name!r}: {err}") from None
        elif device_option is not None and not isinstance(device_option, DeviceOption):
            raise TypeError(
                f"feed_blob: blob {name!r}: device_option must be a DeviceOption, a device name such as "
                f"'cpu', 'opencl' or 'opencl:1', or None, got {type(device_option).__name__} ({device_option!r})"
            )
        if device_option is None:
            device_option = current_device_scope()
        source = backend_of_value(value)
        target = backend_for(device_option) if device_option is not None else (source or backend_for(None))
        if source is not None and source is not target and not source.same_device(target):
            value = source.to_host(value)
            source = backend_of_value(value)
        if source is None or source is backend_for(None):
            array = np.asarray(value)
            if array.dtype.kind not in "biufc":
                raise TypeError(
                    f"feed_blob: blob {name!r} must hold numeric or bool data, got dtype {array.dtype} "
                    f"({type(value).__name__})"
                )
            self._blobs[name] = target.from_host(array)
        else:
            self._blobs[name] = target.copy(value)

    def fetch_blob(self, name, copy=True):
        """Blob ``name`` as a NumPy array: a copy, or a read-only view of a CPU blob.

        Parameters
        ----------
        name : str
            Blob name.
        copy : bool, default True
            True returns a copy (device blobs are copied to the host): changing
            it does not change the blob, and later changes to the blob do not
            show in it.  False returns a read-only view of a CPU blob, without
            copying its data (for a large table).

        Returns
        -------
        numpy.ndarray
            The data.  A view (``copy=False``) follows these rules:

            * it is read-only (``flags.writeable`` is False): write to the blob
              through operators or :meth:`feed_blob`, not through the view;
            * it shares the blob's memory, so it shows the blob's later
              in-place updates (an operator that writes into the blob, such as
              SparseNormalize with its output the same as its input, or any
              operator output of the same shape and dtype as the stored array);
            * it keeps that memory alive and never dangles: when a new array
              is stored under the name (:meth:`feed_blob` again, an operator
              output of another shape or dtype), or the blob is removed
              (:meth:`remove_blob`) or the workspace deleted, the view keeps
              showing the old data, unchanged;
            * take a copy (``copy=True``, or ``view.copy()``) of anything you
              want to keep while operators keep updating the blob.

        Raises
        ------
        MissingBlobError
            If there is no such blob.
        TypeError
            If ``copy`` is not a bool.
        ValueError
            If ``copy`` is False and the blob lives on an OpenCL or CUDA
            device: its data are not in host memory, so there is nothing to
            view (fetch it with ``copy=True``).

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.arange(3.0))
        >>> ws.fetch_blob("x")
        array([0., 1., 2.])

        A view shows in-place updates of the blob, and cannot be written:

        >>> ws.feed_blob("w", np.array([[3.0, 4.0], [6.0, 8.0]]))
        >>> view = ws.fetch_blob("w", copy=False)
        >>> view.flags.writeable
        False
        >>> ws.feed_blob("idx", np.array([1]))
        >>> ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w"))
        >>> view
        array([[3. , 4. ],
               [0.6, 0.8]])
        """
        if not isinstance(copy, (bool, np.bool_)):
            raise TypeError(f"fetch_blob: copy must be a bool, got {type(copy).__name__}")
        value = self._get(name, "fetch_blob")
        backend = backend_of_value(value)
        if copy:
            return backend.to_host(value)
        if not isinstance(value, np.ndarray):
            raise ValueError(
                f"fetch_blob: blob {name!r} lives on {backend.name}, not in host memory: there is no view of it "
                f"to return with copy=False; fetch a copy with copy=True"
            )
        view = value.view()
        view.flags.writeable = False
        return view

    def has_blob(self, name):
        """Whether blob ``name`` exists.

        Parameters
        ----------
        name : str
            Blob name.

        Returns
        -------
        bool
            True if it exists.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(1))
        >>> ws.has_blob("x"), ws.has_blob("y")
        (True, False)
        """
        return name in self._blobs

    def blobs(self):
        """Sorted names of all blobs.

        Returns
        -------
        list of str
            The names.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("b", np.zeros(1))
        >>> ws.feed_blob("a", np.zeros(1))
        >>> ws.blobs()
        ['a', 'b']
        """
        return sorted(self._blobs)

    def remove_blob(self, name):
        """Delete blob ``name``.

        Parameters
        ----------
        name : str
            Blob name.

        Raises
        ------
        MissingBlobError
            If there is no such blob.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(1))
        >>> ws.remove_blob("x")
        >>> ws.blobs()
        []
        """
        self._get(name, "remove_blob")
        del self._blobs[name]

    def blob_device(self, name):
        """The :class:`~caffe2op.DeviceOption` of the device blob ``name`` lives on.

        Parameters
        ----------
        name : str
            Blob name.

        Returns
        -------
        DeviceOption
            Its device.

        Raises
        ------
        MissingBlobError
            If there is no such blob.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(1))
        >>> ws.blob_device("x")
        DeviceOption(device_type=<DeviceType.CPU: 0>, device_id=0)
        """
        return backend_of_value(self._get(name, "blob_device")).device_option

    def run_operator_once(self, op_def):
        """Build the operator of ``op_def`` and run it once.

        The definition is checked against its schema (if it has one), the
        implementation is chosen by device type and engine, and every input
        blob must exist on the operator's device.  Errors keep their type and
        gain a note naming the operator.

        Parameters
        ----------
        op_def : OperatorDef
            The operator to run.

        Raises
        ------
        SchemaError
            If the definition breaks its schema.
        UnknownOperatorError
            If there is no implementation for its type and device.
        MissingBlobError
            If an input blob does not exist.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.array([1.0, 2.0]))
        >>> ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y"))
        >>> ws.fetch_blob("y")
        array([1., 2.])
        """
        if not isinstance(op_def, OperatorDef):
            raise TypeError(
                f"run_operator_once: expected an OperatorDef (see caffe2op.create_operator), got "
                f"{type(op_def).__name__} ({op_def!r})"
            )
        try:
            self._create_operator(op_def).run_on_device()
        except Exception as err:
            _add_note(err, f"while running operator {op_def.describe()}")
            _explain_seed(err, op_def, self._blobs)
            raise

    def run_net(self, net):
        """Run every operator of ``net`` once, in order.

        Parameters
        ----------
        net : Net
            The net.

        Raises
        ------
        Exception
            Whatever an operator raises; its note says which operator (and its
            position in the net) failed.  Operators before it have run.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> net = caffe2op.Net("fill_and_sum")
        >>> net.ConstantFill([], "a", shape=[2], value=1.0)
        'a'
        >>> net.Sum(["a", "a"], "s")
        's'
        >>> ws = caffe2op.Workspace()
        >>> ws.run_net(net)
        >>> ws.fetch_blob("s")
        array([2., 2.], dtype=float32)
        """
        ops = getattr(net, "ops", None)
        if not isinstance(ops, list) or not isinstance(getattr(net, "name", None), str):
            raise TypeError(f"run_net: expected a Net, got {type(net).__name__} ({net!r})")
        for position, op_def in enumerate(ops):
            if not isinstance(op_def, OperatorDef):
                raise TypeError(
                    f"run_net: operator {position} of net {net.name!r} is a {type(op_def).__name__}, "
                    f"not an OperatorDef ({op_def!r})"
                )
            try:
                self._create_operator(op_def).run_on_device()
            except Exception as err:
                _add_note(err, f"while running operator {position} of net {net.name!r}: {op_def.describe()}")
                _explain_seed(err, op_def, self._blobs)
                raise

    # --- used by Operator -------------------------------------------------

    def _create_operator(self, op_def):
        # The whole content is compared, so a definition edited in place is checked again.
        content = (
            op_def.type,
            op_def.inputs,
            op_def.outputs,
            op_def.args,
            op_def.device_option,
            op_def.engine,
            op_def.is_gradient_op,
            registry_generation(),
        )
        prepared = self._prepared.get(id(op_def))
        if prepared is None or prepared[0] != content:
            schema = get_schema(op_def.type, None)
            args = schema.verify(op_def) if schema is not None else dict(op_def.args)
            backend = backend_for(op_def.device_option)
            cls = lookup_operator_class(op_def)
            if len(self._prepared) >= _MAX_PREPARED:
                self._prepared.clear()
            # Copies of the lists and the dict: the cached content must not change with the definition.
            frozen = (
                op_def.type,
                list(op_def.inputs),
                list(op_def.outputs),
                copy.deepcopy(op_def.args),
                op_def.device_option,
                op_def.engine,
                op_def.is_gradient_op,
                registry_generation(),
            )
            prepared = self._prepared[id(op_def)] = (frozen, cls, args, backend)
        _, cls, args, backend = prepared
        return cls(op_def, self, dict(args), backend)

    def _get(self, name, what):
        try:
            return self._blobs[name]
        except KeyError:
            raise MissingBlobError(missing_blob_message(f"{what}: blob", name, list(self._blobs))) from None

    def _lookup_input(self, op_def, index, name):
        try:
            return self._blobs[name]
        except KeyError:
            raise MissingBlobError(
                missing_blob_message(f"{op_def.type}: input {index}", name, list(self._blobs))
            ) from None

    def _raise_wrong_device(self, op_def, index, value, backend):
        source = backend_of_value(value)
        where = source.name if source is not None else f"no device (a {type(value).__name__})"
        raise ValueError(
            f"{op_def.type}: input {index} {op_def.inputs[index]!r} lives on {where} but the operator runs on "
            f"{backend.name}; move it first (CopyCPUToGPU / CopyGPUToCPU) or feed it with that device_option"
        )
