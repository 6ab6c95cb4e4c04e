"""Opening the app's pages in Streamlit's AppTest, the ways the tests (and bench/fuzz.py) need."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app.py"


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(page: str | None, timeout: float = 60, root_first: bool = False, **query: str) -> AppTest:
    """`pages/<page>.py` opened on `query`; `page=None` opens the root (the Overview).

    `root_first` runs app.py's default page once before the switch: ui.state.restore reruns a page
    that a fresh process ran outside app.py's frame, which would otherwise undo the switch.
    """
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    if root_first:
        at.run()
    for k, v in query.items():
        at.query_params[k] = v
    if page is not None:
        at.switch_page(f"pages/{page}.py")
    return rerun(at)


def follow_link(page: str, query: dict[str, str], timeout: float = 60) -> AppTest:
    """`page` opened by a link from another page, as a visitor who follows a link inside the app
    (Compare is the cheapest page to draw with no runs, Architecture the next). Its run may show an
    exception: the fuzzers check for that themselves."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.switch_page("pages/compare.py" if page != "compare" else "pages/architecture.py").run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py").run()
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """{widget key: plotly figure as JSON} of every chart drawn now."""
    return {c.proto.id.split("-", 2)[2]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
