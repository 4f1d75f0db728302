# SPDX-License-Identifier: BSD-3-Clause
"""Test configuration: hypothesis profiles and a clean thread setting per test.

Profiles (``CAFFE2OP_HYPOTHESIS_PROFILE``):
  dev       few examples, the default for a quick local run;
  ci        reproducible (derandomized, no example database), what CI runs;
  thorough  many examples, on demand.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=15, **_COMMON)
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("CAFFE2OP_HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _default_threads():
    """Every test starts and ends with the default thread count."""
    import caffe2op

    caffe2op.set_num_threads(None)
    yield
    caffe2op.set_num_threads(None)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    """Path of a wheel built from this checkout (once per session: compiling takes ~1 minute)."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(root)],
        check=True,
    )
    (wheel,) = out.glob("caffe2op-*.whl")
    return wheel


# --- devices -------------------------------------------------------------------
#
# ``device`` runs a test on the CPU and on every OpenCL device found;
# ``opencl_device`` on every OpenCL device only.  Both yield DeviceOptions.
# Without any OpenCL device their OpenCL runs skip, or fail when
# CAFFE2OP_REQUIRE_OPENCL=1 (what .ci/run sets).  Session-scoped so that
# hypothesis tests can use them.

REQUIRE_OPENCL = os.environ.get("CAFFE2OP_REQUIRE_OPENCL") == "1"
_MISSING = "opencl-missing"


def _opencl_params():
    from caffe2op import opencl_devices

    devices = opencl_devices()
    if not devices:
        return [pytest.param(_MISSING, id=_MISSING, marks=pytest.mark.opencl)]
    return [pytest.param(f"opencl:{d.index}", id=f"opencl{d.index}", marks=pytest.mark.opencl) for d in devices]


def _device_option(param):
    from caffe2op import DeviceOption, DeviceType
    from caffe2op.opencl import describe_platforms

    if param == "cpu":
        return DeviceOption(DeviceType.CPU)
    if param == _MISSING:
        reason = f"no OpenCL device: {describe_platforms()[0]}"
        if REQUIRE_OPENCL:
            pytest.fail(f"{reason} (CAFFE2OP_REQUIRE_OPENCL=1)", pytrace=False)
        pytest.skip(reason)
    return DeviceOption(DeviceType.OPENCL, int(param.split(":")[1]))


@pytest.fixture(scope="session", params=[pytest.param("cpu", id="cpu")] + _opencl_params())
def device(request):
    """A DeviceOption: the CPU, then each OpenCL device."""
    return _device_option(request.param)


@pytest.fixture(scope="session", params=_opencl_params())
def opencl_device(request):
    """A DeviceOption of each OpenCL device."""
    return _device_option(request.param)
