# SPDX-License-Identifier: BSD-3-Clause
"""Helpers of the device tests: run one operator in a workspace on a device."""

import numpy as np

import caffe2op
from caffe2op.devices import backend_for


def run_op(device, op_type, feeds, inputs, outputs, **args):
    """Feed ``feeds`` on ``device``, run ``op_type`` there, return (workspace, {output: NumPy array})."""
    ws = caffe2op.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value, device)
    ws.run_operator_once(caffe2op.create_operator(op_type, inputs, outputs, device_option=device, **args))
    return ws, {name: ws.fetch_blob(name) for name in ([outputs] if isinstance(outputs, str) else outputs)}


def on_device(device, array):
    """A copy of ``array`` on ``device`` (a NumPy copy for the CPU)."""
    return backend_for(device).from_host(np.asarray(array))


def is_cpu(device):
    """Whether ``device`` is the CPU."""
    return device.device_type == caffe2op.DeviceType.CPU
