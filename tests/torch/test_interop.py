# SPDX-License-Identifier: BSD-3-Clause
"""The functional API on CPU tensors and DLPack/array-interface objects: same memory, same kind back, typed errors."""

import numpy as np
import pytest

import caffe2op
from tests.torch._torch import import_torch

torch = import_torch()


def _table(dtype=torch.float32):
    return torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_sparse_normalize_updates_the_tensor_in_place(dtype, index_dtype):
    table = _table(dtype)
    address, version = table.data_ptr(), table._version
    expected = caffe2op.sparse_normalize(table.numpy().copy(), [0, 2, 0], norm=1.0)
    result = caffe2op.sparse_normalize(table, torch.tensor([0, 2, 0], dtype=index_dtype), norm=1.0)
    assert result is table and table.data_ptr() == address
    assert np.array_equal(table.numpy(), expected)
    assert table._version > version  # autograd sees the write


def test_sparse_normalize_numpy_table_tensor_indices():
    table = _table().numpy().copy()
    caffe2op.sparse_normalize(table, torch.tensor([1]), use_max_norm=False, norm=2.0)
    np.testing.assert_allclose(table[1], [1.2, 1.6], rtol=1e-6)


def test_normalize_returns_a_tensor_and_writes_out():
    w = torch.tensor([[3.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    expected = caffe2op.normalize(w.numpy(), axis=0)
    result = caffe2op.normalize(w, axis=0)
    assert isinstance(result, torch.Tensor) and np.array_equal(result.numpy(), expected)
    out = torch.empty_like(w)
    assert caffe2op.normalize(w, axis=0, out=out) is out and torch.equal(out, result)
    assert caffe2op.normalize(w, axis=0, out=w) is w and torch.equal(w, result)  # in place


def test_stop_gradient_copies_and_cuts_the_graph():
    x = torch.arange(4.0, requires_grad=True)
    y = caffe2op.stop_gradient(x)
    assert isinstance(y, torch.Tensor) and not y.requires_grad and torch.equal(y, x.detach())
    assert y.data_ptr() != x.data_ptr()
    out = torch.empty(4)
    assert caffe2op.stop_gradient(x, out=out) is out and torch.equal(out, x.detach())


def test_zero_gradient_takes_a_tensor():
    x = torch.ones(3, requires_grad=True)
    assert caffe2op.zero_gradient(x) is None and torch.equal(x.detach(), torch.ones(3))


def test_dlpack_and_array_interface_objects():
    class Interface:
        def __init__(self, array):
            self.array = array
            self.__array_interface__ = array.__array_interface__

    base = np.array([[3.0, 4.0], [0.3, 0.4]])
    wrapped = Interface(base)
    assert caffe2op.sparse_normalize(wrapped, [0]) is wrapped
    np.testing.assert_allclose(base[0], [0.6, 0.8])

    class DLPackOnly:
        def __init__(self, tensor):
            self.tensor = tensor

        def __dlpack__(self, **kwargs):
            return self.tensor.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.tensor.__dlpack_device__()

    t = _table()
    assert caffe2op.sparse_normalize(DLPackOnly(t), [2]) is not None
    assert torch.allclose(t[2], torch.tensor([0.6, 0.8]))


def _unchanged_after(call, table):
    before = table.clone()
    with pytest.raises((TypeError, ValueError)) as info:
        call(table)
    assert torch.equal(table, before)
    return str(info.value)


def test_typed_errors_say_what_to_do():
    msg = _unchanged_after(lambda t: caffe2op.sparse_normalize(t, [0]), _table().requires_grad_())
    assert "requires grad" in msg and "no_grad" in msg
    with torch.no_grad():  # what the message says: allowed
        leaf = _table().requires_grad_()
        caffe2op.sparse_normalize(leaf, [0])
        assert torch.allclose(leaf[0], torch.tensor([0.6, 0.8]))
    msg = _unchanged_after(lambda t: caffe2op.sparse_normalize(t.t(), [0]), _table())
    assert "contiguous" in msg
    with pytest.raises(TypeError, match="bfloat16.*float"):
        caffe2op.sparse_normalize(_table(torch.bfloat16), [0])
    with pytest.raises(TypeError, match="dense"):
        caffe2op.sparse_normalize(_table().to_sparse(), [0])
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        caffe2op.sparse_normalize(torch.ones((2, 2), dtype=torch.int32), [0])
    with pytest.raises(ValueError, match="requires grad.*torch.ops.caffe2op.normalize"):
        caffe2op.normalize(_table().requires_grad_())
    with pytest.raises(IndexError):
        caffe2op.sparse_normalize(_table(), torch.tensor([3]))
    meta = torch.ones((2, 2), device="meta")
    with pytest.raises(ValueError, match="lives on meta"):
        caffe2op.sparse_normalize(meta, [0])


def test_import_caffe2op_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, caffe2op; caffe2op.sparse_normalize; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_caffe2op_torch_without_torch_says_how_to_install():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import caffe2op.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert 'pip install "caffe2op[torch]"' in out
