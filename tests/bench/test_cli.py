# SPDX-License-Identifier: BSD-3-Clause
"""``python -m caffe2op bench``: its help, its groups, where it writes, and its exit status.

The harness runs here on a tiny group registered by the test (see
``_tiny_group``), never on the real cases: timings belong in the benchmarks.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from caffe2op.bench import main, registry
from caffe2op.bench.report import markdown
from caffe2op.bench.timing import FLOOR, OURS, PEER, Case, Contender, Target


def tiny_cases(quick):
    """Two cases: one whose target is met for sure, one whose target cannot be met."""
    x = np.arange(1000.0)
    copy = Contender("caffe2op", lambda _: x.copy(), lambda: None, OURS)
    yield Case(
        "Tiny",
        "met",
        [copy, Contender("floor", lambda _: x.copy(), lambda: None, FLOOR)],
        reference=lambda: x,
        targets=[Target(None, 10.0, kind="max_time")],
        series="size",
        x=1000,
    )
    yield Case(
        "Tiny",
        "missed",
        [copy, Contender("peer", lambda _: x.copy(), lambda: None, PEER)],
        reference=lambda: x,
        targets=[Target("peer", 1e9)],
        series="size",
        x=2000,
    )


def wrong_cases(quick):
    """A peer that computes something else: the run must stop with status 1."""
    x = np.arange(10.0)
    yield Case(
        "Tiny",
        "wrong",
        [
            Contender("caffe2op", lambda _: x, lambda: None, OURS),
            Contender("liar", lambda _: x + 1, lambda: None, PEER),
        ],
        reference=lambda: x,
    )


@pytest.fixture
def tiny_group():
    registry.register_group("tinytest", "a test group", "tests.bench.test_cli:tiny_cases")
    registry.register_group("wrongtest", "a test group", "tests.bench.test_cli:wrong_cases")
    yield
    del registry.GROUPS["tinytest"], registry.GROUPS["wrongtest"]


def _help():
    run = subprocess.run([sys.executable, "-m", "caffe2op", "bench", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    return run.stdout


def test_help_explains_itself_in_plain_text():
    text = _help()
    assert "``" not in text and ":func:" not in text  # no raw reStructuredText
    assert "benchmark harness behind" not in text  # not circular
    for words in ("--output DIR", "--update-docs", "--check", "exit status", "docs/benchmarks.md", "numba"):
        assert words in text
    # Every group is listed whole on a line of its own, never broken mid-word.
    for key in registry.GROUPS:
        assert any(line.split()[:1] == [key] for line in text.splitlines()), key


@pytest.mark.parametrize(
    "argv", [["--groups", "nosuchgroup"], ["--update-docs", "--quick"], ["--update-docs", "--groups", "sweeps"]]
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_writes_only_its_output_folder_and_check_turns_a_miss_into_status_1(tiny_group, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--groups", "tinytest"]) == 0  # without --check a missed target is reported, not fatal
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bench"]
    written = sorted(p.relative_to(tmp_path / ".bench").as_posix() for p in (tmp_path / ".bench").rglob("*.*"))
    assert written == ["benchmarks.json", "benchmarks.md", "plots/tiny-size.png"]
    data = json.loads((tmp_path / ".bench" / "benchmarks.json").read_text())
    assert [t["met"] for case in data["cases"] for t in case["targets"]] == [True, False]
    assert main(["--groups", "tinytest", "--check", "--quick", "--output", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "benchmarks-quick.md").exists()


def test_a_wrong_result_stops_the_run_with_status_1(tiny_group, tmp_path, capsys):
    assert main(["--groups", "wrongtest", "--output", str(tmp_path)]) == 1
    assert "liar disagrees with the reference" in capsys.readouterr().err


def test_report_states_its_ratio_once_and_keeps_tables_narrow(tiny_group, tmp_path):
    main(["--groups", "tinytest", "--output", str(tmp_path)])
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    text = markdown(data["machine"], data["cases"])
    assert text.count("t(contender) / t(caffe2op)") == 1
    assert "`t(peer) / t(caffe2op) >= 1e+09`" in text
    table_widths = [line.count("|") - 1 for line in text.splitlines() if line.startswith("|")]
    assert table_widths and max(table_widths) <= 6


def test_update_docs_writes_the_page_and_its_plots(tiny_group, tmp_path, monkeypatch):
    import caffe2op.bench as bench

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "conf.py").write_text("")
    monkeypatch.setattr(registry, "GROUPS", {"tinytest": registry.GROUPS["tinytest"]})  # "the full run", tiny
    monkeypatch.setattr(bench, "_docs_dir", lambda: docs)
    assert main(["--update-docs", "--output", str(tmp_path / "out")]) == 0
    page = (docs / "benchmarks.md").read_text()
    assert "(_static/benchmarks/tiny-size.png)" in page
    assert (docs / "_static" / "benchmarks" / "tiny-size.png").exists()
    assert (tmp_path / "out" / "benchmarks.json").exists()
    assert sorted(p.name for p in docs.iterdir()) == ["_static", "benchmarks.md", "conf.py"]
