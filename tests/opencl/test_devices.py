# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL device layer: enumeration, device choice, backends, lazy import, kernel builds and caching."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import caffe2op
from caffe2op import DeviceOption, DeviceType, opencl
from caffe2op.devices import backend_for, backend_of_value

from .._helpers import assert_bit_identical

KERNEL_FILES = sorted(p.name for p in opencl.kernel_dir().glob("*.cl"))


def _run_python(code, **env):
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment
    )


def test_import_without_pyopencl():
    """import caffe2op neither needs nor imports pyopencl; asking for a device then says what is missing."""
    result = _run_python(
        """
        import sys
        sys.modules["pyopencl"] = None  # makes "import pyopencl" fail
        import numpy as np, caffe2op
        assert caffe2op.opencl_devices() == []
        print(caffe2op.sparse_normalize(np.array([[3.0, 4.0]]), [0]))
        try:
            caffe2op.sparse_normalize(np.array([[3.0, 4.0]]), [0], device="opencl")
        except RuntimeError as err:
            print("RuntimeError:", err)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "[[0.6 0.8]]" in result.stdout
    assert "RuntimeError:" in result.stdout and "pyopencl is not installed" in result.stdout


def test_import_does_not_load_pyopencl():
    result = _run_python("import sys, caffe2op; caffe2op.Workspace(); print('pyopencl' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_devices_are_described(opencl_device):
    infos = caffe2op.opencl_devices()
    info = infos[opencl_device.device_id]
    assert info.index == opencl_device.device_id
    assert info.version.startswith("OpenCL") and info.global_mem_bytes > 0 and info.max_alloc_bytes > 0
    lines = opencl.describe_platforms()
    assert len(lines) == len(infos) and f"OPENCL:{info.index}" in lines[info.index]
    assert opencl.device_info(opencl_device) is info


def test_missing_devices_list_what_exists():
    count = len(caffe2op.opencl_devices())
    with pytest.raises(RuntimeError, match=rf"DeviceOption\(OPENCL, {count}\): no OpenCL device number {count}"):
        backend_for(DeviceOption(DeviceType.OPENCL, count))
    cuda = sum(d.cuda_index is not None for d in caffe2op.opencl_devices())
    with pytest.raises(RuntimeError, match="NVIDIA OpenCL platform") as err:
        backend_for(DeviceOption(DeviceType.CUDA, cuda))
    if count:
        assert "available: OPENCL:0" in str(err.value)
    ws = caffe2op.Workspace()
    with pytest.raises(RuntimeError, match="CUDA"):
        ws.feed_blob("x", np.ones(2), DeviceOption(DeviceType.CUDA, cuda))
    assert not ws.has_blob("x")


def test_default_device_from_environment(opencl_device):
    """CAFFE2OP_OPENCL_DEVICE, then PYOPENCL_CTX, pick what device='opencl' means."""
    index = opencl_device.device_id
    info = caffe2op.opencl_devices()[index]
    code = "from caffe2op import opencl; print(opencl.default_device().device_id)"
    assert _run_python(code, CAFFE2OP_OPENCL_DEVICE=str(index)).stdout.strip() == str(index)
    assert _run_python(code, CAFFE2OP_OPENCL_DEVICE=info.name[:6]).stdout.strip().isdigit()
    result = _run_python(code, CAFFE2OP_OPENCL_DEVICE="no such device anywhere")
    assert "names no OpenCL device" in result.stderr and "available: OPENCL:0" in result.stderr
    environ = {k: v for k, v in os.environ.items() if k != "CAFFE2OP_OPENCL_DEVICE"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**environ, "PYOPENCL_CTX": "0:0"}
    )
    assert result.stdout.strip() == "0", result.stderr


def test_resolve_device():
    assert opencl.resolve_device(None) is None
    assert opencl.resolve_device("cpu") == DeviceOption()
    assert opencl.resolve_device("CUDA") == DeviceOption(DeviceType.CUDA, 0)
    assert opencl.resolve_device("opencl:3") == DeviceOption(DeviceType.OPENCL, 3)
    with pytest.raises(ValueError, match="is not 'cpu', 'opencl'"):
        opencl.resolve_device("tpu")
    with pytest.raises(TypeError):
        opencl.resolve_device(3)


def test_backends_share_one_context_per_device(opencl_device):
    """One context and queue per device, created once; blobs know their backend."""
    backend = backend_for(opencl_device)
    assert backend_for(DeviceOption(DeviceType.OPENCL, opencl_device.device_id)) is backend
    value = backend.from_host(np.arange(3))
    assert backend_of_value(value) is backend
    assert backend.owns(value) and not backend_for(None).owns(value)
    assert value.flags.c_contiguous
    copy = backend.copy(value)
    assert copy is not value and copy.context == value.context
    assert_bit_identical(backend.to_host(copy), np.arange(3))
    assert backend.same_device(backend_for(opencl_device))


def test_feed_and_fetch(opencl_device):
    """feed_blob copies to the device; fetch_blob returns NumPy; device arrays of a caller's context are fed too."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    ws = caffe2op.Workspace()
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    ws.feed_blob("x", x, opencl_device)
    assert ws.blob_device("x") == opencl_device
    fetched = ws.fetch_blob("x")
    assert isinstance(fetched, np.ndarray)
    assert_bit_identical(fetched, x)
    queue = cl.CommandQueue(cl.Context([backend_for(opencl_device).device]))
    ws.feed_blob("y", cla.to_device(queue, x), opencl_device)  # another context: through the host
    assert backend_for(opencl_device).owns(ws._blobs["y"])
    ws.feed_blob("z", ws._blobs["x"])  # a device blob without device_option stays on its device
    assert ws.blob_device("z") == opencl_device and ws._blobs["z"] is not ws._blobs["x"]
    ws.feed_blob("h", ws._blobs["x"], DeviceOption())
    assert isinstance(ws._blobs["h"], np.ndarray)


def test_fetch_view_of_a_device_blob_is_refused(opencl_device):
    """A device blob is not in host memory: copy=False says so, and copy=True still fetches it."""
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(3.0, dtype=np.float32), opencl_device)
    with pytest.raises(ValueError, match=r"fetch_blob: blob 'x' lives on OPENCL:\d.*copy=True"):
        ws.fetch_blob("x", copy=False)
    assert_bit_identical(ws.fetch_blob("x", copy=True), np.arange(3.0, dtype=np.float32))


@pytest.mark.parametrize("filename", KERNEL_FILES)
def test_each_kernel_file_compiles_on_its_own(opencl_device, filename):
    """Every .cl file builds with its default macros, and without compiler output."""
    cl = pytest.importorskip("pyopencl")
    backend = backend_for(opencl_device)
    source = (opencl.kernel_dir() / filename).read_text()
    assert "#pragma once" in source and '#include "caffe2op_common.h"' in source
    with warnings.catch_warnings():
        warnings.simplefilter("error", cl.CompilerWarning)
        program = cl.Program(backend.context, opencl.programs.program_source(filename)).build(cache_dir=False)
    names = program.get_info(cl.program_info.KERNEL_NAMES).split(";")
    assert names and all(n.startswith("caffe2op_") and n.endswith(("_fwd", "_bwd", "_check")) for n in names)


def test_dtype_variants_build_and_are_cached(opencl_device):
    """One program per (context, file, options): the same object comes back; dtypes get their own."""
    backend = backend_for(opencl_device)
    variants = [np.float16, np.float32, np.int8, np.uint64] + ([np.float64] if backend.info.fp64 else [])
    programs = {}
    for dtype in variants:
        defines = opencl.dtype_defines("Sum", dtype, backend.info)
        program = opencl.get_program(backend.context, "sum.cl", defines)
        assert opencl.get_program(backend.context, "sum.cl", dict(defines)) is program
        assert opencl.get_kernel(program, "caffe2op_sum_fwd") is opencl.get_kernel(program, "caffe2op_sum_fwd")
        programs[np.dtype(dtype)] = program
    assert len({id(p) for p in programs.values()}) == len(variants)
    with pytest.raises(ValueError, match="no OpenCL kernel file"):
        opencl.get_program(backend.context, "../setup.py")


def test_unsupported_dtypes_are_type_errors(opencl_device):
    backend = backend_for(opencl_device)
    with pytest.raises(TypeError, match="Sum: OpenCL kernels do not handle dtype complex64"):
        opencl.dtype_defines("Sum", np.complex64, backend.info)
    ws = caffe2op.Workspace()
    ws.feed_blob("c", np.ones(2, np.complex64), opencl_device)
    with pytest.raises(TypeError, match="complex64"):
        ws.run_operator_once(caffe2op.create_operator("Sum", ["c", "c"], "s", device_option=opencl_device))


def test_registered_for_opencl_and_cuda():
    for op_type in ("ZeroGradient", "StopGradient", "SparseNormalize", "Float16SparseNormalize", "ConstantFill", "Sum"):
        for device_type in (DeviceType.CPU, DeviceType.OPENCL, DeviceType.CUDA):
            assert op_type in caffe2op.registered_operators(device_type)
    for op_type in ("CopyCPUToGPU", "CopyGPUToCPU"):
        assert op_type in caffe2op.registered_operators(DeviceType.OPENCL)
        assert op_type in caffe2op.registered_operators(DeviceType.CUDA)
        assert op_type not in caffe2op.registered_operators(DeviceType.CPU)
