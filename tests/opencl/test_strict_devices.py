# SPDX-License-Identifier: BSD-3-Clause
"""Every OpenCL kernel under smaller devices: emulated limits on PoCL, and the Oclgrind CI step.

``CAFFE2OP_OPENCL_LIMITS`` lowers what a device reports (work-group size,
local memory, fp64, 64-bit atomics) and forces the GPU launch shapes, so
that the fallback paths of a small GPU run here on PoCL.  Each limit set runs
one battery of small cases that reaches every kernel and launch shape, and
compares it with the CPU path (per-dtype tolerances) and with itself (the
same bits twice).  ``.ci/oclgrind`` runs this module on the Oclgrind device,
which reports out-of-bounds accesses, data races and API misuse.
"""

import os

import numpy as np
import pytest
import scipy.sparse as sp

import caffe2op
from caffe2op.devices import backend_for

from .._helpers import assert_allclose_dtype
from ._device_helpers import limits_fixture_value

# "" is the environment's own setting (what .ci/oclgrind passes); the others emulate smaller GPUs.
LIMITS = [
    "",
    "shape=gpu",
    "shape=gpu,work_group=64",
    "shape=gpu,work_group=128,local_mem=2048",
    "shape=gpu,work_group=256,local_mem=520",
    "shape=gpu,fp64=0,int64_atomics=0",
    "shape=cpu,fp64=0,int64_atomics=0",
    "shape=gpu,fast_fp64=0",
    "shape=cpu,fast_fp64=0",
]
# Under Oclgrind (.ci/oclgrind) only the environment's setting runs, on the small battery, once:
# the simulator interprets every work item and checks every access.
SIMULATED = os.environ.get("CAFFE2OP_STRICT_SIMULATED") == "1"
if SIMULATED:
    LIMITS = [""]


@pytest.fixture(params=LIMITS, ids=lambda text: text or "env")
def limits(request):
    """Re-probe the devices under ``CAFFE2OP_OPENCL_LIMITS=<param>`` for one test, then restore."""
    yield from limits_fixture_value(request)


def _rng(seed):
    return np.random.default_rng(seed)


def _table(dtype, rows, width, seed):
    table = (_rng(seed).standard_normal((rows, width)) * 2).astype(dtype)
    table[1] = 0  # an all-zero row stays zero
    if width >= 2:
        table[2] = 0
        table[2, :2] = (3, 4)  # norm exactly 5: kept by max-norm mode with norm=5
    return table


def _sparse_normalize_cases(fp64):
    dtypes = [np.float16, np.float32] + ([np.float64] if fp64 else [])
    for dtype in dtypes:
        for width in (7, 64) if SIMULATED else (1, 7, 64, 300):
            for use_max_norm, norm in ((False, 1.0), (True, 5.0)):
                yield dtype, width, use_max_norm, norm


def _run_battery(device):
    """{case name: NumPy result} of every kernel on ``device`` (the CPU gives the references)."""
    on = "cpu" if device == "cpu" else device
    results = {}
    fp64 = device == "cpu" or backend_for(caffe2op.opencl.resolve_device(device)).info.fp64
    indices = np.array([0, 1, 2, 5, 5, 9, 0, 17, 33, 2], dtype=np.int64)
    for dtype, width, use_max_norm, norm in _sparse_normalize_cases(fp64):
        table = _table(dtype, 40, width, width)
        results[f"sparse_normalize {np.dtype(dtype)} w{width} {use_max_norm}"] = caffe2op.sparse_normalize(
            table, indices, use_max_norm=use_max_norm, norm=norm, device=on
        )
    dense = [((9, 64), 1), ((33, 5), 1), ((3, 600), 1), ((70, 19), 0), ((4, 9, 11), 1), ((2, 1031), 0)]
    if SIMULATED:  # the same kernels and launch shapes, on fewer elements
        dense = [((3, 64), 1), ((6, 5), 1), ((2, 530), 1), ((12, 19), 0), ((2, 3, 11), 1), ((600, 2), 0)]
    for dtype in [np.float16, np.float32] + ([np.float64] if fp64 else []):
        for shape, axis in dense:
            x = (_rng(len(shape) + shape[-1]).standard_normal(shape) * 3).astype(dtype)
            results[f"normalize {np.dtype(dtype)} {shape} axis {axis}"] = _normalize_on(x, axis, on)
        if dtype == np.float16:
            continue  # scipy.sparse holds no float16
        w = sp.random(*((9, 7) if SIMULATED else (37, 29)), density=0.3, format="csr", dtype=np.float64, random_state=7)
        w = w.astype(dtype)
        duplicated = sp.csr_array((np.ones(4, dtype), np.array([1, 1, 3, 1]), np.array([0, 3, 3, 4])), shape=(3, 5))
        for name, matrix in (("csr", w), ("csc", w.tocsc()), ("duplicates", duplicated)):
            for axis in (0, 1):
                results[f"sparse {name} {np.dtype(dtype)} axis {axis}"] = _normalize_sparse_on(matrix, axis, on)
    prime = 257 if SIMULATED else 1009
    a, b = _rng(1).standard_normal(prime).astype(np.float32), _rng(2).standard_normal(prime).astype(np.float32)
    results["sum prime"] = _sum_on(a, b, device)
    results["constant fill prime"] = _fill_on((prime,), 2.5, device)
    results["stop_gradient"] = caffe2op.stop_gradient(a, device=on)
    return results


def _normalize_on(x, axis, on):
    if on == "cpu":
        return caffe2op.normalize(x, axis=axis)
    backend = backend_for(caffe2op.opencl.resolve_device(on))
    return backend.to_host(caffe2op.normalize(backend.from_host(x), axis=axis))


def _normalize_sparse_on(matrix, axis, on):
    if on == "cpu":
        return caffe2op.normalize(matrix, axis=axis).toarray()
    d = caffe2op.DeviceSparseMatrix.from_scipy(matrix, on)
    return caffe2op.normalize(d, axis=axis).to_scipy().toarray()


def _sum_on(a, b, device):
    option = (
        caffe2op.DeviceOption(caffe2op.DeviceType.CPU) if device == "cpu" else caffe2op.opencl.resolve_device(device)
    )
    ws = caffe2op.Workspace()
    ws.feed_blob("a", a, option)
    ws.feed_blob("b", b, option)
    ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "b"], "s", device_option=option))
    return ws.fetch_blob("s")


def _fill_on(shape, value, device):
    option = (
        caffe2op.DeviceOption(caffe2op.DeviceType.CPU) if device == "cpu" else caffe2op.opencl.resolve_device(device)
    )
    ws = caffe2op.Workspace()
    ws.run_operator_once(
        caffe2op.create_operator("ConstantFill", [], "f", shape=list(shape), value=value, device_option=option)
    )
    return ws.fetch_blob("f")


@pytest.mark.opencl
def test_every_kernel_matches_cpu_and_repeats_bit_for_bit(opencl_device, limits):
    """Each case equals the CPU path within its dtype's tolerance, and a second run gives the same bits."""
    name = f"opencl:{opencl_device.device_id}"
    first = _run_battery(name)
    again = first if SIMULATED else _run_battery(name)  # Oclgrind: once (its checks cost the time)
    reference = _run_battery("cpu")
    for case, value in first.items():
        assert again[case].tobytes() == value.tobytes(), f"{case}: not deterministic under {limits!r}"
        assert_allclose_dtype(value, reference[case], err_msg=f"{case} under {limits!r}")


@pytest.mark.opencl
def test_limits_are_reported(opencl_device, limits):
    """The device info carries the emulated limits, and float64 is refused on a device 'without' fp64."""
    from caffe2op.opencl.devices import _parse_limits

    info = backend_for(opencl_device).info
    assert info.emulated == limits
    parsed = _parse_limits(limits)
    if parsed.get("work_group") == 64:
        assert info.max_work_group_size <= 64
    if parsed.get("local_mem") == 520:
        assert info.local_mem_bytes <= 520
    if parsed.get("int64_atomics") == 0:
        assert not info.int64_atomics
    if parsed.get("shape") == "gpu":
        assert info.gpu_launch_shape
    if parsed.get("fast_fp64") == 0:
        assert info.fp64 and not info.fast_fp64  # double precision is still there, only reported slow
    if parsed.get("fp64") == 0:
        assert not info.fp64 and not info.fast_fp64
        table = np.ones((3, 2))
        with pytest.raises(TypeError, match="fp64"):
            caffe2op.sparse_normalize(table, [0], device=f"opencl:{opencl_device.device_id}")
        assert np.array_equal(table, np.ones((3, 2)))


def test_bad_limits_are_rejected(monkeypatch):
    """A typo in CAFFE2OP_OPENCL_LIMITS is an error naming the key, not a silently ignored setting."""
    from caffe2op.opencl.devices import _parse_limits

    with pytest.raises(ValueError, match="unknown key 'workgroup'"):
        _parse_limits("workgroup=64")
    with pytest.raises(ValueError, match="positive integer"):
        _parse_limits("work_group=0")
    with pytest.raises(ValueError, match="'gpu' or 'cpu'"):
        _parse_limits("shape=fast")
    assert _parse_limits(" work_group=64, fp64=0 ,shape=gpu") == {"work_group": 64, "fp64": 0, "shape": "gpu"}


@pytest.mark.opencl
def test_rows_exactly_at_norm_are_kept_under_every_limit(opencl_device, limits):
    """A [3, 4, 0, ...] row is bit-identical after max-norm mode with norm 5, with float or double sums."""
    for dtype in (np.float16, np.float32):
        for width in (2, 7, 64):
            table = _table(dtype, 40, width, 11)
            before = table.copy()
            caffe2op.sparse_normalize(
                table, [2, 2, 5], use_max_norm=True, norm=5.0, device=f"opencl:{opencl_device.device_id}"
            )
            assert table[2].tobytes() == before[2].tobytes(), (np.dtype(dtype), width, limits)


def test_fp64_probe_never_raises():
    """Older drivers reject CL_DEVICE_DOUBLE_FP_CONFIG without the extension: the probe says 'no fp64'."""
    from caffe2op.opencl.devices import _device_fp64

    class FakeError(Exception):
        pass

    class FakeCL:
        Error = FakeError

    class Device:
        @property
        def double_fp_config(self):
            raise FakeError("CL_INVALID_VALUE")

    assert _device_fp64(FakeCL, Device(), ["cl_khr_fp16"]) is False
    assert _device_fp64(FakeCL, Device(), ["cl_khr_fp64"]) is True


@pytest.mark.opencl
def test_kernel_folder_with_a_space(opencl_device, tmp_path, monkeypatch):
    """Programs build from a kernel folder whose path holds a space (PoCL rejects such a -I path)."""
    import shutil

    from caffe2op import opencl
    from caffe2op.opencl import programs

    folder = tmp_path / "kernels with space"
    shutil.copytree(opencl.kernel_dir(), folder)
    monkeypatch.setattr(programs, "kernel_dir", lambda: folder)
    programs._program_source.cache_clear()
    programs._source_hash.cache_clear()
    try:
        backend = backend_for(opencl_device)
        program = programs.get_program(backend.context, "sum.cl", {"REAL": "float", "C2O_SPACE_TEST": 1})
        assert programs.get_kernel(program, "caffe2op_sum_fwd").function_name == "caffe2op_sum_fwd"
    finally:
        programs._program_source.cache_clear()
        programs._source_hash.cache_clear()


def test_source_hash_follows_every_kernel_file(tmp_path, monkeypatch):
    """Changing any header changes the build options, so no driver cache can return a stale binary."""
    import shutil

    from caffe2op import opencl
    from caffe2op.opencl import programs

    folder = tmp_path / "kernels"
    shutil.copytree(opencl.kernel_dir(), folder)
    monkeypatch.setattr(programs, "kernel_dir", lambda: folder)
    programs._program_source.cache_clear()
    programs._source_hash.cache_clear()
    try:
        before = programs.build_options({"REAL": "float"})
        with open(folder / "caffe2op_common.h", "a") as header:
            header.write("\n/* touched */\n")
        programs._program_source.cache_clear()
        programs._source_hash.cache_clear()
        assert programs.build_options({"REAL": "float"}) != before
        assert "/* touched */" in programs.program_source("sum.cl")
    finally:
        programs._program_source.cache_clear()
        programs._source_hash.cache_clear()


@pytest.mark.opencl
@pytest.mark.parametrize("n", [1, 7, 257, 1009, 65537])
def test_elementwise_size_is_a_multiple_of_256(opencl_device, n):
    """A prime element count no longer forces one-item work-groups on the driver."""
    from caffe2op import opencl

    (size,) = opencl.elementwise_size(backend_for(opencl_device).queue, n)
    assert size % 256 == 0 and size >= min(n, 256)
