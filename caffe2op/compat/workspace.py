# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``caffe2.python.workspace`` functions over :class:`caffe2op.Workspace` objects.

Caffe2 kept one current workspace per process, reached through module
functions (``FeedBlob``, ``RunNetOnce`` ...).  Here each named workspace is
a :class:`caffe2op.Workspace`; :func:`CurrentWorkspace` names the current
one and :func:`SwitchWorkspace` changes it.  :func:`Workspace` returns the
current one, for mixing with the native API.

Examples
--------
>>> import numpy as np
>>> from caffe2op.compat import core, workspace
>>> workspace.ResetWorkspace()
True
>>> workspace.FeedBlob("x", np.arange(3.0))
True
>>> workspace.RunOperatorOnce(core.CreateOperator("StopGradient", "x", "y"))
True
>>> workspace.FetchBlob("y"), workspace.Blobs()
(array([0., 1., 2.]), ['x', 'y'])
"""

import copy as _copy
import threading

from .. import net as _net
from ..workspace import Workspace as _Workspace
from . import caffe2_pb2

__all__ = [
    "Blobs",
    "CreateNet",
    "CurrentWorkspace",
    "FeedBlob",
    "FetchBlob",
    "FetchBlobs",
    "HasBlob",
    "ResetWorkspace",
    "RunNet",
    "RunNetOnce",
    "RunOperatorOnce",
    "RunOperatorsOnce",
    "SwitchWorkspace",
    "Workspace",
]

#: Caffe2's ``workspace.GpuDeviceType`` (CUDA; caffe2op runs CUDA devices through OpenCL).
GpuDeviceType = caffe2_pb2.CUDA

#: Caffe2's flag for a CUDA build: False (caffe2op reaches GPUs through OpenCL, see caffe2op.opencl_devices).
has_gpu_support = False

_LOCK = threading.RLock()
_WORKSPACES = {"default": _Workspace()}
_NETS = {"default": {}}  # workspace name -> {net name: native Net made by CreateNet}
_CURRENT = ["default"]


def Workspace():  # noqa: N802 - returns the object behind the module functions
    """The current :class:`caffe2op.Workspace` (the object the module functions use).

    Returns
    -------
    caffe2op.Workspace
        The current workspace.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.FeedBlob("w_native", [1.0])
    True
    >>> workspace.Workspace().fetch_blob("w_native")
    array([1.])
    """
    return _WORKSPACES[_CURRENT[0]]


def CurrentWorkspace():  # noqa: N802 - Caffe2's name
    """Name of the current workspace (``"default"`` at start).

    Returns
    -------
    str
        The name.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.CurrentWorkspace()
    'default'
    """
    return _CURRENT[0]


def Workspaces():  # noqa: N802 - Caffe2's name
    """Names of every workspace.

    Returns
    -------
    list of str
        The names, sorted.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> "default" in workspace.Workspaces()
    True
    """
    return sorted(_WORKSPACES)


def SwitchWorkspace(name, create_if_missing=False):  # noqa: N802 - Caffe2's name
    """Make workspace ``name`` current.

    Parameters
    ----------
    name : str
        The workspace.
    create_if_missing : bool, default False
        Create it when it does not exist.

    Raises
    ------
    KeyError
        If it does not exist and ``create_if_missing`` is False.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.SwitchWorkspace("doc_scratch", create_if_missing=True)
    >>> workspace.CurrentWorkspace(), workspace.Blobs()
    ('doc_scratch', [])
    >>> workspace.SwitchWorkspace("default")
    """
    name = str(name)
    with _LOCK:
        if name not in _WORKSPACES:
            if not create_if_missing:
                raise KeyError(f"SwitchWorkspace: no workspace named {name!r} (pass create_if_missing=True)")
            _WORKSPACES[name] = _Workspace()
            _NETS[name] = {}
        _CURRENT[0] = name


def ResetWorkspace(root_folder=None):  # noqa: N802 - Caffe2's name
    """Empty the current workspace: no blobs, no created nets.

    Parameters
    ----------
    root_folder : str, optional
        Ignored (caffe2op workspaces have no folder).

    Returns
    -------
    bool
        True.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.FeedBlob("x", [1.0]); workspace.ResetWorkspace(); workspace.Blobs()
    True
    True
    []
    """
    with _LOCK:
        _WORKSPACES[_CURRENT[0]] = _Workspace()
        _NETS[_CURRENT[0]] = {}
    return True


def GlobalInit(args):  # noqa: N802 - Caffe2's name
    """Accepted for compatibility: caffe2op has no global flags.

    Parameters
    ----------
    args : list of str
        Caffe2's command-line flags (ignored).

    Returns
    -------
    bool
        True.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.GlobalInit(["caffe2", "--caffe2_log_level=0"])
    True
    """
    return True


def _device(device_option):
    if device_option is None or isinstance(device_option, str):
        return device_option
    return caffe2_pb2._native_device(device_option)


def FeedBlob(name, arr, device_option=None):  # noqa: N802 - Caffe2's name
    """Copy ``arr`` into blob ``name`` (on ``device_option``'s device).

    Parameters
    ----------
    name : str or BlobReference
        Blob name.
    arr : array_like
        The data.
    device_option : caffe2_pb2.DeviceOption, optional
        Where the blob lives (the current DeviceScope otherwise).

    Returns
    -------
    bool
        True.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.compat import workspace
    >>> workspace.FeedBlob("x", np.arange(2.0))
    True
    """
    Workspace().feed_blob(str(name), arr, _device(device_option))
    return True


def FetchBlob(name):  # noqa: N802 - Caffe2's name
    """A NumPy copy of blob ``name``.

    Parameters
    ----------
    name : str or BlobReference
        Blob name.

    Returns
    -------
    numpy.ndarray
        The data.

    Raises
    ------
    caffe2op.MissingBlobError
        If there is no such blob.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.FeedBlob("x", [1.0, 2.0]); workspace.FetchBlob("x")
    True
    array([1., 2.])
    """
    return Workspace().fetch_blob(str(name))


def FetchBlobs(names):  # noqa: N802 - Caffe2's name
    """NumPy copies of several blobs.

    Parameters
    ----------
    names : list of str
        Blob names.

    Returns
    -------
    list of numpy.ndarray
        The data, in order.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.FeedBlob("a", [1]); workspace.FeedBlob("b", [2]); workspace.FetchBlobs(["a", "b"])
    True
    True
    [array([1]), array([2])]
    """
    return [FetchBlob(name) for name in names]


def HasBlob(name):  # noqa: N802 - Caffe2's name
    """Whether blob ``name`` exists.

    Parameters
    ----------
    name : str or BlobReference
        Blob name.

    Returns
    -------
    bool
        True if it exists.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.ResetWorkspace(); workspace.HasBlob("nothing")
    True
    False
    """
    return Workspace().has_blob(str(name))


def Blobs():  # noqa: N802 - Caffe2's name
    """Names of every blob of the current workspace.

    Returns
    -------
    list of str
        The names, sorted.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> workspace.ResetWorkspace(); workspace.FeedBlob("b", [0]); workspace.Blobs()
    True
    True
    ['b']
    """
    return Workspace().blobs()


def _as_native_net(net):
    if isinstance(net, _net.Net):
        return net
    if isinstance(net, caffe2_pb2.NetDef):
        native = _net.Net(net.name or "net")
        native.ops = net._ops
        return native
    raise TypeError(f"expected a Net or a NetDef, got {type(net).__name__} ({net!r})")


def RunOperatorOnce(operator):  # noqa: N802 - Caffe2's name
    """Run one operator (an OperatorDef message or a caffe2op OperatorDef).

    Parameters
    ----------
    operator : caffe2_pb2.OperatorDef or caffe2op.OperatorDef
        The operator.

    Returns
    -------
    bool
        True.

    Raises
    ------
    Exception
        Whatever :meth:`caffe2op.Workspace.run_operator_once` raises.

    Examples
    --------
    >>> from caffe2op.compat import core, workspace
    >>> workspace.FeedBlob("x", [1.0]); workspace.RunOperatorOnce(core.CreateOperator("StopGradient", "x", "y"))
    True
    True
    """
    Workspace().run_operator_once(caffe2_pb2.as_native(operator))
    return True


def RunOperatorsOnce(operators):  # noqa: N802 - Caffe2's name
    """Run several operators in order.

    Parameters
    ----------
    operators : list of OperatorDef
        The operators.

    Returns
    -------
    bool
        True.

    Examples
    --------
    >>> from caffe2op.compat import core, workspace
    >>> workspace.FeedBlob("x", [1.0])
    True
    >>> workspace.RunOperatorsOnce([core.CreateOperator("StopGradient", "x", "y"),
    ...                             core.CreateOperator("StopGradient", "y", "z")])
    True
    """
    for op in operators:
        RunOperatorOnce(op)
    return True


def RunNetOnce(net):  # noqa: N802 - Caffe2's name
    """Run every operator of ``net`` once.

    Parameters
    ----------
    net : Net or caffe2_pb2.NetDef
        The net (a compat or caffe2op Net, or a NetDef).

    Returns
    -------
    bool
        True.

    Raises
    ------
    TypeError
        If ``net`` is not a net.

    Examples
    --------
    >>> from caffe2op.compat import core, workspace
    >>> net = core.Net("doc_run_once")
    >>> _ = net.ConstantFill([], "c", shape=[2], value=1.0)
    >>> workspace.RunNetOnce(net), workspace.FetchBlob("c")
    (True, array([1., 1.], dtype=float32))
    """
    Workspace().run_net(_as_native_net(net))
    return True


def CreateNet(net, overwrite=False, input_blobs=None):  # noqa: N802 - Caffe2's name
    """Keep a copy of ``net`` in the current workspace under its name, for :func:`RunNet`.

    The operators are copied: changing the net afterwards does not change
    the created one, as in Caffe2.

    Parameters
    ----------
    net : Net or caffe2_pb2.NetDef
        The net.
    overwrite : bool, default False
        Replace a created net of the same name.
    input_blobs : list of str, optional
        Blobs to create (as ``[0.0]``) when missing.

    Returns
    -------
    bool
        True.

    Raises
    ------
    RuntimeError
        If a net of that name exists and ``overwrite`` is False.

    Examples
    --------
    >>> from caffe2op.compat import core, workspace
    >>> net = core.Net("doc_created")
    >>> _ = net.ConstantFill([], "c", shape=[1], value=2.0)
    >>> workspace.CreateNet(net), workspace.RunNet(net.Name()), workspace.FetchBlob("c")
    (True, True, array([2.], dtype=float32))
    """
    native = _as_native_net(net)
    for name in input_blobs or ():
        if not HasBlob(name):
            FeedBlob(name, [0.0])
    with _LOCK:
        nets = _NETS[_CURRENT[0]]
        if native.name in nets and not overwrite:
            raise RuntimeError(f"CreateNet: a net named {native.name!r} already exists (pass overwrite=True)")
        snapshot = _net.Net(native.name)
        snapshot.ops = [_copy.deepcopy(op) for op in native.ops]
        nets[native.name] = snapshot
    return True


def RunNet(name, num_iter=1, allow_fail=False):  # noqa: N802 - Caffe2's name
    """Run the net created by :func:`CreateNet` ``num_iter`` times.

    Parameters
    ----------
    name : str or Net
        The net's name (or the net).
    num_iter : int, default 1
        How many times.
    allow_fail : bool, default False
        Accepted for compatibility (errors always raise).

    Returns
    -------
    bool
        True.

    Raises
    ------
    KeyError
        If no net of that name was created.

    Examples
    --------
    >>> from caffe2op.compat import workspace
    >>> try:
    ...     workspace.RunNet("never_created")
    ... except KeyError as err:
    ...     print(err.args[0].split(" (")[0])
    RunNet: no net named 'never_created' was created in workspace 'default'
    """
    key = name.Name() if hasattr(name, "Name") else getattr(name, "name", name)
    nets = _NETS[_CURRENT[0]]
    if key not in nets:
        raise KeyError(f"RunNet: no net named {key!r} was created in workspace {_CURRENT[0]!r} (call CreateNet)")
    for _ in range(num_iter):
        Workspace().run_net(nets[key])
    return True


class _Blobs:
    """``workspace.blobs``: the current workspace's blobs as a dict-like object (fetch, feed, iterate)."""

    def __getitem__(self, name):
        return FetchBlob(name)

    def __setitem__(self, name, value):
        FeedBlob(name, value)

    def __contains__(self, name):
        return HasBlob(name)

    def __iter__(self):
        return iter(Blobs())

    def __len__(self):
        return len(Blobs())

    def __repr__(self):
        return f"<workspace.blobs of {CurrentWorkspace()!r}: {Blobs()}>"


#: The current workspace's blobs: ``workspace.blobs["x"] = array``, ``workspace.blobs["x"]``.
blobs = _Blobs()
