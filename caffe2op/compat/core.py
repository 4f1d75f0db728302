# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``caffe2.python.core`` names over caffe2op: ``CreateOperator``, ``Net``, ``GradientRegistry`` ...

Everything here converts Caffe2's calling conventions and returns Caffe2's
kinds of objects (OperatorDef messages, :class:`BlobReference`), then calls
caffe2op's own functions: operators are :class:`caffe2op.OperatorDef`
objects underneath, nets are :class:`caffe2op.Net` objects, gradients come
from :func:`caffe2op.get_backward_pass`.

Differences from Caffe2 that ported code may meet:

* ``CreateOperator`` checks what caffe2op checks when an operator runs,
  not at once (as Caffe2); but an argument the operator's schema does not
  declare is dropped with a :class:`CompatWarning` (Caffe2 ignores it; the
  native API rejects it), and a bool argument given an int is read as
  Caffe2 reads it (``use_max_norm=2`` is true).
* Gradient functions registered with ``GradientRegistry.RegisterGradient``
  receive and return OperatorDef messages, as in Caffe2.

Examples
--------
>>> import numpy as np
>>> from caffe2op.compat import core, workspace
>>> net = core.Net("example")
>>> s = net.Sum(["a", "b"], "s")
>>> grad_map = net.AddGradientOperators([s])
>>> [op.type for op in net.Proto().op]
['Sum', 'ConstantFill']
>>> workspace.FeedBlob("a", np.ones(2, np.float32)); workspace.FeedBlob("b", np.ones(2, np.float32))
True
True
>>> workspace.RunNetOnce(net)
True
>>> workspace.FetchBlob(grad_map["a"])
array([1., 1.], dtype=float32)
"""

from ..gradient import GradientSlice
from ._gradients import GradientRegistry
from ._names import BlobReference, CurrentNameScope, NameScope, ScopedBlobReference, ScopedName  # noqa: F401
from ._net import Net
from ._operators import (  # noqa: F401  (CurrentDeviceScope, IsOperatorWithEngine: Caffe2's names too)
    CompatWarning,
    CreateOperator,
    CurrentDeviceScope,
    DeviceOption,
    DeviceScope,
    IsOperator,
    IsOperatorWithEngine,
)

__all__ = [
    "BlobReference",
    "CompatWarning",
    "CreateOperator",
    "DeviceOption",
    "DeviceScope",
    "GradientRegistry",
    "GradientSlice",
    "IsOperator",
    "NameScope",
    "Net",
    "ScopedBlobReference",
    "ScopedName",
]

# Documented, pickled and printed under the module that ported code imports them from.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("caffe2op.compat._"):
        _value.__module__ = __name__
del _name, _value
