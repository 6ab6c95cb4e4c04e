"""The sidebar's page links are the app's navigation (ui/frame.py): one per page of app.py's PAGES,
in its order, with its title, icon and URL; Streamlit's own list is off."""

from __future__ import annotations

import tomllib

from tests import apptest
from tests.conftest import ROOT
from tests.test_browser_navigation import app_pages


def test_sidebar_links_are_the_pages_in_order():
    pages = app_pages()
    at = apptest.open_page(None, timeout=120)
    links = [p.proto for p in at.sidebar.get("page_link")][:len(pages)]
    assert [p.label for p in links] == [p["title"] for p in pages]
    assert [p.icon for p in links] == [p["icon"] for p in pages]
    assert [p.page for p in links] == ["" if p["default"] else p["url_path"] for p in pages]  # default: the root
    assert all(p.page_script_hash and not p.external for p in links)
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False  # Streamlit's own list stays off


def test_every_page_file_is_named_as_its_url():
    """A fresh server's first run looks a URL up among the pages/ folder's file names before app.py
    routes it; a file named otherwise than its URL (gradient_flow.py for /gradient-flow) showed
    Streamlit's "Page not found" dialog on a first visit (tests/test_browser_navigation.py)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / "app.py").read_text())
    pages = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "Page"]
    assert len(pages) >= 6
    for call in pages:
        path = Path(ast.literal_eval(call.args[0]))
        url = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "url_path")
        assert path.parent.name == "pages" and path.stem == url, (path, url)
        assert (root / path).is_file()
