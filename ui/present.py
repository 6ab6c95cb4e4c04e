"""Presenter mode, for a projector: `?present=1` in the URL, kept across pages and widget changes.

It enlarges the page's text 1.3 times (charts keep their layout at the page's full width),
trims the sidebar to what a demo needs (the pages, the demos, the page's own controls) and has the
classroom demos speak in plain words. ui.state.publish writes `present=1` into every page's URL
while it is on, so a copied link opens in presenter mode too.
"""

from __future__ import annotations

import streamlit as st

KEY = "present"  # the query-string name, and the session-state key of the switch
_ON = ("1", "true", "on", "yes")

# The page's text zoomed; each chart zoomed back and given the page's full width instead: Streamlit sizes
# a chart from its container's on-screen width, so a zoomed chart came out 1.3 times too wide and was cut.
_CSS = """<style>
[data-testid="stMainBlockContainer"] { zoom: 1.3; max-width: 100%; padding-left: 2rem; padding-right: 2rem; }
[data-testid="stMainBlockContainer"] [data-testid="stPlotlyChart"] { zoom: calc(1 / 1.3); }
[data-testid="stSidebar"] { zoom: 1.15; }
.st-key-present_extras { display: none; }
</style>"""


_SEEN = "_present_written"  # what publish last wrote for the switch: "1", or None for nothing


def read_url() -> None:
    """Take the switch from the URL when it says something this session did not write itself: a
    link or a first visit. (A page switch drops the query string: that changes nothing.)"""
    ss = st.session_state
    raw = st.query_params.get(KEY)
    if raw is not None and raw != ss.get(_SEEN):
        ss[KEY] = raw.strip().lower() in _ON
        ss[_SEEN] = raw
    ss.setdefault(KEY, False)


def on() -> bool:
    return bool(st.session_state.get(KEY, False))


def query() -> dict[str, str]:
    """What the URL carries for the switch (present=1 while on, nothing otherwise); for ui.state.publish."""
    st.session_state[_SEEN] = "1" if on() else None
    return {KEY: "1"} if on() else {}


def frame() -> None:
    """The sidebar switch and, while on, the projector's styles. app.py calls this once a run."""
    read_url()
    st.sidebar.toggle("Presenter mode", key=KEY, help="For a projector: everything larger, the sidebar trimmed "
                      "to the demos and the page's controls, demo captions in plain words. Kept in the URL.")
    if on():
        st.html(_CSS)


def extras():
    """A sidebar container for what presenter mode hides (the device, the papers)."""
    return st.sidebar.container(key="present_extras")
