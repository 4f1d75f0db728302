# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op for PyTorch: a fast drop-in ``embedding_renorm_``, a row-norm constraint, and custom operators.

Importing this module registers the custom operators
``torch.ops.caffe2op.sparse_normalize_``, ``torch.ops.caffe2op.normalize``,
``torch.ops.caffe2op.stop_gradient`` and ``torch.ops.caffe2op.embedding_renorm_``
(each with a fake implementation, so they run inside
``torch.compile(fullgraph=True)``).  The functional API of caffe2op itself
(``caffe2op.sparse_normalize`` and the others) takes CPU tensors without
this module: it works on the tensors' memory in place.

torch is an optional dependency: ``pip install "caffe2op[torch]"``.
``import caffe2op`` never imports torch; importing ``caffe2op.torch``
without torch raises ImportError.
"""

try:
    import torch as _torch  # noqa: F401  (absolute: the top-level torch, not this module)
except ImportError as err:  # pragma: no cover - exercised in a subprocess without torch
    raise ImportError('caffe2op.torch needs PyTorch, which is not installed: pip install "caffe2op[torch]"') from err

from caffe2op.torch._constraint import RowNormConstraint
from caffe2op.torch._ops import OPERATORS  # noqa: F401  (registers torch.ops.caffe2op.*)
from caffe2op.torch._renorm import embedding_renorm_

__all__ = ["RowNormConstraint", "embedding_renorm_"]
