# SPDX-License-Identifier: BSD-3-Clause
"""Run Caffe2 Python code with only its imports changed.

Replace::

    from caffe2.proto import caffe2_pb2
    from caffe2.python import core, workspace, test_util

with::

    from caffe2op.compat import caffe2_pb2, core, workspace, test_util

and Caffe2 code that builds operators and nets, registers gradients,
builds backward passes and runs them in the workspace runs on caffe2op.
Every name is a thin layer over caffe2op's own API (:mod:`caffe2op.compat.core`,
:mod:`caffe2op.compat.workspace`, :mod:`caffe2op.compat.caffe2_pb2`,
:mod:`caffe2op.compat.test_util`, and :mod:`caffe2op.compat.hypothesis_test_util`
for Caffe2's operator tests, which needs hypothesis).  The porting guide
lists what differs.
"""

from . import caffe2_pb2, core, test_util, workspace

__all__ = ["caffe2_pb2", "core", "test_util", "workspace"]
