# SPDX-License-Identifier: BSD-3-Clause
"""Check the internal links of the built HTML documentation, offline.

    python docs/check_links.py [docs/_build/html]

Every ``href`` and ``src`` of every page that points inside the build (not
``http:``, ``mailto:`` and the like) must name a file that exists, and its
``#fragment``, if any, an ``id`` (or ``name``) of that page.  Sphinx already
fails on an unknown ``:ref:`` or ``:doc:``; this catches what it does not:
Markdown links, raw paths to ``_static`` files, anchors of headings, and links
written by templates and extensions.  ``bash .ci/docs`` runs it after each
build; it prints the broken links and exits with 1 when there is one.
"""

import html.parser
import pathlib
import sys
import urllib.parse

# Pages written by Sphinx's search machinery, whose links JavaScript fills in.
SKIPPED_PAGES = {"search.html"}


class _Page(html.parser.HTMLParser):
    """The links and the anchors (ids and names) of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.anchors.add(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.anchors.add(attributes["name"])
        if tag in ("a", "link") and attributes.get("href") is not None:
            self.links.append((attributes["href"], self.getpos()[0]))
        elif tag in ("img", "script", "iframe", "source") and attributes.get("src"):
            self.links.append((attributes["src"], self.getpos()[0]))
        elif tag == "object" and attributes.get("data"):
            self.links.append((attributes["data"], self.getpos()[0]))


def _parse(path, cache):
    page = cache.get(path)
    if page is None:
        page = cache[path] = _Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(root):
    """Every broken internal link under ``root``, as ``(page, line, link, reason)``.

    Parameters
    ----------
    root : pathlib.Path
        The HTML output folder (``docs/_build/html``).

    Returns
    -------
    list of tuple
        Empty when every internal link resolves.
    """
    root = root.resolve()
    cache = {}
    problems = []
    for path in sorted(root.rglob("*.html")):
        relative = path.relative_to(root)
        if relative.parts[0] in ("_static", "_sources", "_images") or relative.name in SKIPPED_PAGES:
            continue
        for link, line in _parse(path, cache).links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("javascript:", "data:")):
                continue  # external: not this check's business (and no network here)
            target = path if not parts.path else (path.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root):
                problems.append((relative, line, link, "points outside the documentation"))
            elif not target.exists():
                problems.append((relative, line, link, "no such file"))
            elif parts.fragment and target.suffix == ".html":
                if urllib.parse.unquote(parts.fragment) not in _parse(target, cache).anchors:
                    problems.append(
                        (relative, line, link, f"no anchor #{parts.fragment} in {target.relative_to(root)}")
                    )
    return problems


def main(argv=None):
    """Check the build and report; return the exit status (0: every link resolves).

    Parameters
    ----------
    argv : list of str, optional
        The HTML output folder, at most (default: ``docs/_build/html``).

    Returns
    -------
    int
        0 or 1.
    """
    argv = sys.argv[1:] if argv is None else argv
    root = pathlib.Path(argv[0] if argv else pathlib.Path(__file__).resolve().parent / "_build" / "html")
    if not (root / "index.html").is_file():
        print(f"check_links: {root} holds no built documentation (run bash .ci/docs)", file=sys.stderr)
        return 1
    problems = broken_links(root)
    for page, line, link, reason in problems:
        print(f"{page}:{line}: broken link {link!r}: {reason}", file=sys.stderr)
    print(f"== internal links checked: {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
