# SPDX-License-Identifier: BSD-3-Clause
"""Which precision each OpenCL device sums in, and the compensated float sums used where double is slow."""

import numpy as np
import pytest

from caffe2op.devices import backend_for
from caffe2op.opencl import devices as devices_module
from caffe2op.opencl.devices import OpenCLDeviceInfo, fast_fp64
from caffe2op.opencl.programs import accumulation, kernel_dir

_NAMES = {
    # data-centre GPUs: double at 1/2-1/3 of the float rate
    "NVIDIA H100 80GB HBM3": True,
    "NVIDIA H200": True,
    "NVIDIA A100-SXM4-80GB": True,
    "Tesla V100-SXM2-16GB": True,
    "Tesla P100-PCIE-16GB": True,
    "AMD Instinct MI250X": True,
    "gfx90a:sramecc+:xnack-": True,
    "gfx942": True,
    "Intel(R) Data Center GPU Max 1550": True,
    # consumer and workstation GPUs: 1/16-1/64, or none
    "NVIDIA GeForce RTX 4090": False,
    "NVIDIA RTX A3000 Laptop GPU": False,
    "NVIDIA H20": False,
    "Tesla T4": False,
    "gfx1100": False,
    "AMD Radeon RX 7900 XTX": False,
    "Intel(R) Arc(TM) A770 Graphics": False,
    "Apple M2 Max": False,
}


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_fast_fp64_by_device_name(name):
    assert fast_fp64(name, False, True) is _NAMES[name]
    assert fast_fp64(name, False, False) is False  # no fp64 at all
    assert fast_fp64(name, True, True) is True  # every CPU device


def _info(name, fp64=True, fast=None):
    return OpenCLDeviceInfo(
        0, None, "platform", name, "vendor", "OpenCL 3.0", "", fp64, False, 1 << 30, 1 << 28, 8,
        fast_fp64=fast_fp64(name, False, fp64) if fast is None else fast,
    )  # fmt: skip


def test_accumulation_policy():
    h100, rtx, no_fp64 = _info("NVIDIA H100 80GB HBM3"), _info("NVIDIA GeForce RTX 4090"), _info("Apple M2", fp64=False)
    f16, f32, f64 = (np.dtype(t) for t in (np.float16, np.float32, np.float64))
    assert [accumulation(d, h100) for d in (f16, f32, f64)] == ["double", "double", "double"]
    assert [accumulation(d, rtx) for d in (f16, f32, f64)] == ["compensated", "compensated", "double"]
    assert [accumulation(d, no_fp64) for d in (f16, f32)] == ["compensated", "compensated"]
    for info in (h100, rtx, no_fp64):
        assert accumulation(f16, info, half_in_float=True) == "float"


def test_fast_fp64_limit_lowers_it(monkeypatch, opencl_device):
    from caffe2op.opencl import backend as backend_module

    info = backend_for(opencl_device).info
    monkeypatch.setenv("CAFFE2OP_OPENCL_LIMITS", "fast_fp64=0")
    backend_module._reprobe_devices()
    try:
        lowered = [d for d in devices_module.opencl_devices() if d.name == info.name][0]
        assert lowered.fp64 == info.fp64 and lowered.fast_fp64 is False
        assert accumulation(np.dtype(np.float32), lowered) == "compensated"
    finally:
        monkeypatch.delenv("CAFFE2OP_OPENCL_LIMITS")
        backend_module._reprobe_devices()
    restored = [d for d in devices_module.opencl_devices() if d.name == info.name][0]
    assert restored.fast_fp64 == info.fast_fp64


_SUM_SQUARES_KERNEL = """
__kernel void sum_squares(__global const float *x, const uint n, __global float *out)
{
    float hi = 0.0f, lo = 0.0f, plain = 0.0f;
    for (uint i = 0; i < n; ++i) {
        C2O_ADD_SQUARE_COMPENSATED(float, hi, lo, x[i]);
        plain += x[i] * x[i];
    }
    /* two halves combined, to test C2O_ADD_COMPENSATED too */
    float hi2 = 0.0f, lo2 = 0.0f, hi3 = 0.0f, lo3 = 0.0f;
    for (uint i = 0; i < n / 2; ++i) C2O_ADD_SQUARE_COMPENSATED(float, hi2, lo2, x[i]);
    for (uint i = n / 2; i < n; ++i) C2O_ADD_SQUARE_COMPENSATED(float, hi3, lo3, x[i]);
    C2O_ADD_COMPENSATED(float, hi2, lo2, hi3, lo3);
    out[0] = hi + lo;
    out[1] = plain;
    out[2] = hi2 + lo2;
    out[3] = lo;
}
"""


def test_compensated_sum_of_squares_matches_double(opencl_device):
    import pyopencl as cl

    backend = backend_for(opencl_device)
    with open(f"{kernel_dir()}/caffe2op_common.h", encoding="utf-8") as header:
        source = header.read().replace("#pragma once", "") + _SUM_SQUARES_KERNEL
    program = cl.Program(backend.context, source).build(options=["-D", "C2O_COMPENSATED=1"])
    rng = np.random.default_rng(7)
    n = 1 << 20
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-4, 4, n))).astype(np.float32)
    exact = float(np.sum(x.astype(np.float64) ** 2))
    mf = cl.mem_flags
    x_buffer = cl.Buffer(backend.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x)
    out = np.zeros(4, np.float32)
    out_buffer = cl.Buffer(backend.context, mf.WRITE_ONLY, out.nbytes)
    program.sum_squares(backend.queue, (1,), (1,), x_buffer, np.uint32(n), out_buffer)
    cl.enqueue_copy(backend.queue, out, out_buffer)
    compensated, plain, combined = (abs(float(v) - exact) / exact for v in out[:3])
    # the pair stays normalised: lo is below one unit in the last place of hi
    assert abs(float(out[3])) <= float(np.spacing(np.float32(out[0])))
    # a plain float sum of 2**20 squares drifts (~1e-3 here); the pair is double-float accurate,
    # and hi + lo rounded to float is within one rounding of the exact sum
    assert compensated <= 2**-24, compensated
    assert combined <= 2**-24, combined
    assert plain > 2**-16, plain
