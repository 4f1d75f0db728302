# SPDX-License-Identifier: BSD-3-Clause
"""docs/check_links.py, the offline check of the built documentation's internal links (run by .ci/docs)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_links", ROOT / "docs" / "check_links.py")
check_links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_links)


def _site(tmp_path, pages):
    for name, body in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>")
    return tmp_path


def test_working_links_pass(tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<a href="guide/a.html#sec">a</a> <a href="#top" id="top">t</a> <img src="_static/p.png">'
            '<a href="https://example.org/x#nowhere">external</a> <a href="mailto:x@y">m</a>',
            "guide/a.html": '<section id="sec"><a href="../index.html">up</a><a href="../guide/">dir</a></section>',
            "guide/index.html": "",
            "_static/p.png": "",
        },
    )
    assert check_links.broken_links(site) == []
    assert check_links.main([str(site)]) == 0


def test_missing_files_and_anchors_are_reported(tmp_path, capsys):
    site = _site(
        tmp_path,
        {
            "index.html": '<a href="gone.html">x</a>\n<a href="a.html#nope">y</a>\n<img src="_static/missing.png">'
            '<a href="#here">z</a><object data="../../outside.svg"></object>',
            "a.html": '<p id="there"></p>',
        },
    )
    problems = {(link, reason.split(" in ")[0]) for _, _, link, reason in check_links.broken_links(site)}
    assert problems == {
        ("gone.html", "no such file"),
        ("a.html#nope", "no anchor #nope"),
        ("_static/missing.png", "no such file"),
        ("#here", "no anchor #here"),
        ("../../outside.svg", "points outside the documentation"),
    }
    assert check_links.main([str(site)]) == 1
    err = capsys.readouterr().err
    assert "index.html:1: broken link 'gone.html': no such file" in err


def test_a_folder_without_a_build_is_an_error(tmp_path, capsys):
    assert check_links.main([str(tmp_path)]) == 1
    assert "holds no built documentation" in capsys.readouterr().err
