# SPDX-License-Identifier: BSD-3-Clause
"""The README's Python snippets run, in order, as one program (so the README stays true)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(capsys):
    snippets = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(snippets) >= 5
    namespace = {"__name__": "readme"}
    needs_opencl = any("opencl" in s.lower() for s in snippets)
    import caffe2op

    if needs_opencl and not caffe2op.opencl_devices():
        pytest.skip("the README's OpenCL snippet needs an OpenCL device")
    for snippet in snippets:
        exec(compile(snippet, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "{'y': 'y_autogen_grad', 'h': 'h_grad', 'x': 'h_grad'}" in out
    assert "[3. 3. 3.]" in out
