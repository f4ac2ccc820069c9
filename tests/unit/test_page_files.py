"""The page's files keep to what its Content-Security-Policy allows, and escape model text.

No inline script or style (the policy would block them), nothing from other hosts, every
file the page refers to is one the route serves, and no script writes HTML strings.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from chatrelay.web.routes.page import PAGE_DIR, STATIC_FILES


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("src", "href") and value is not None:
                self.refs.append(value)
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")


def test_index_has_no_inline_code_and_only_served_files() -> None:
    collector = _Collector()
    collector.feed((PAGE_DIR / "index.html").read_text())
    assert collector.problems == []
    for ref in collector.refs:
        if ref.startswith("#") or ref.startswith("data:"):
            continue
        assert ref.startswith("/static/"), ref
        assert ref.removeprefix("/static/") in STATIC_FILES, ref


def test_every_served_file_exists_and_scripts_import_only_served_files() -> None:
    for name in STATIC_FILES:
        assert (PAGE_DIR / name).is_file(), name
    for name in STATIC_FILES:
        if not name.endswith(".js"):
            continue
        source = (PAGE_DIR / name).read_text()
        for imported in re.findall(r'from "\./([^"]+)"', source):
            assert imported in STATIC_FILES, (name, imported)
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert risky not in source, (name, risky)
        assert "http://" not in source and "https://" not in source, name
