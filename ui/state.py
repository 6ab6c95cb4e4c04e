"""Page state that survives page switches and lives in the URL.

Each page declares its widgets as `Field`s. `restore(fields)` runs before the
widgets are drawn: it seeds each widget key from, in order, the URL query
string (validated; a bad value falls back to the default with a note), the
copy kept from the last visit to the page, or the default. `publish(fields)`
runs after the widgets: it keeps a copy of every value (Streamlit forgets the
state of widgets that are not drawn) and writes them to the query string, so a
link reproduces the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from ui import present

_SHADOW = "_kept_"
_SEEN = "_url_written_by_"
_PAGE = "_url_page"
_FORCE = "_url_force_write"  # a link was followed: the browser's address bar may not show it yet
_NOTES = "_url_notes"  # (page, notes, the values they were given with): kept until something changes
_FRESH = "_url_notes_fresh"  # the notes were made in this script run


@dataclass(frozen=True)
class Field:
    key: str  # widget key, and the query-string name
    default: Any  # value when nothing else says otherwise; its type is the field's type
    options: tuple[Any, ...] | None = None  # the allowed values, for choices
    lo: float | None = None  # inclusive bounds for numbers
    hi: float | None = None
    check: Callable[[Any], bool] | None = None  # extra validity test for the parsed value
    allowed: str = "a valid value"  # what `check` accepts, in words, for the note on a refused value
    # The page itself moves it on every refresh (a recording's position): the browser's address lags
    # behind it, so it never tells by itself that a link was followed; a link's value is still read.
    volatile: bool = False

    def parse(self, raw: str) -> Any:
        """The value a query-string text stands for; ValueError if it stands for none allowed."""
        d = self.default
        if isinstance(d, bool):
            low = raw.lower()
            if low in ("1", "true", "on", "yes"):
                value: Any = True
            elif low in ("0", "false", "off", "no"):
                value = False
            else:
                raise ValueError("true or false")
        elif isinstance(d, int):
            value = _number(int, raw, self._range("a whole number"))
        elif isinstance(d, float):
            value = _number(float, raw, self._range("a number"))
            if value != value:  # NaN
                raise ValueError(self._range("a number" if isinstance(self.default, float) else "a whole number"))
        elif isinstance(d, tuple):
            value = tuple(_number(int, v, "whole numbers separated by commas") for v in raw.split(",") if v.strip())
        else:
            value = raw
        if self.options is not None and value not in self.options:
            raise ValueError("one of " + ", ".join(map(str, self.options)))
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
            raise ValueError(self._range("a number" if isinstance(self.default, float) else "a whole number"))
        if self.check is not None and not self.check(value):
            raise ValueError(self.allowed)
        return value

    def _range(self, what: str) -> str:
        if self.lo is None and self.hi is None:
            return what
        return f"{what} from {self.lo:g} to {self.hi:g}" if isinstance(self.default, float) else \
            f"{what} from {self.lo} to {self.hi}"

    def format(self, value: Any) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return str(value)


def _number(kind: type, raw: str, allowed: str) -> Any:
    """int(raw) or float(raw), with the allowed values as the error (not Python's own wording)."""
    try:
        return kind(raw)
    except (ValueError, OverflowError):
        raise ValueError(allowed) from None


def md_code(text: str) -> str:
    """`text` as a markdown code span: shown literally (no links, colours, icons or HTML)."""
    text = " ".join(str(text).split())  # a code span is one line
    run, longest = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def _run_through_app() -> None:
    """Re-run through app.py when Streamlit ran a page file on its own.

    Because a `pages/` folder sits beside app.py, a fresh server answers a first request for
    a page's URL (a shared link) the pre-st.navigation way: the page file alone, without
    app.py's frame and page list. st.navigation clears that mode on its first call; this does
    it for the first visitor who arrives by a link, and reruns, so the link opens as intended.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def last_page() -> str:
    """The page the previous script run restored (before this run's restore): "" at first."""
    return st.session_state.get(_PAGE, "")


def restore(page: str, fields: Sequence[Field]) -> list[str]:
    """Seed widget state for `page`; return notes about URL values that were refused.

    Every page calls this first, so it also makes sure the page runs inside app.py's frame.
    """
    _run_through_app()
    notes: list[str] = []
    ss = st.session_state
    params = st.query_params
    # The URL is read when it says something this page did not write itself: a first visit
    # by a link, or a link (a classroom preset) followed from another page. Otherwise it
    # still holds the values of the run before a widget change, which must not undo it.
    ss[_PAGE] = page
    ours = {f.key for f in fields if not f.volatile}
    outside = {k: params.get(k) for k in params if k in ours}
    seen = ss.get(_SEEN + page)
    from_link = bool(outside) and outside != (None if seen is None else {k: v for k, v in seen.items() if k in ours})
    if from_link:
        # A page link followed from its own page (a classroom demo) reruns the page with the link's
        # query string, yet the browser keeps the address it had: publish must write the URL even
        # though the server-side values already match, or the next widget change sends the old one.
        ss[_FORCE] = True
    for f in fields:
        if from_link and f.key in params:
            raw = params.get(f.key, "")
            try:
                ss[f.key] = f.parse(raw)
                continue
            except (ValueError, TypeError) as e:
                notes.append(f"URL value {f.key}={raw[:40]!r} was ignored (allowed: {e}); "
                             f"using {f.format(f.default)!r}.")
                ss[f.key] = f.default
                continue
        if f.key not in ss:
            ss[f.key] = ss.get(_SHADOW + f.key, f.default)
    # Every full run sends each widget its value, not only the run that first set it. An app-wide
    # rerun (a fragment's st.rerun) that overtakes a page's first run in a busy browser otherwise
    # leaves the tab showing the widgets' own defaults (the first option, the minimum) while the
    # server keeps the session's values, and the next click sends those defaults back: a Train tab
    # then trained ResNet-18 for 1 step. A value assigned before its widget is drawn goes with it.
    for f in fields:
        if f.key in ss:
            ss[f.key] = ss[f.key]
    return _kept_notes(page, fields, notes, from_link)


def _values(fields: Sequence[Field]) -> dict[str, Any]:
    ss = st.session_state
    return {f.key: ss.get(f.key) for f in fields}


def _kept_notes(page: str, fields: Sequence[Field], notes: list[str], from_link: bool) -> list[str]:
    """The notes of a refused link stay on screen until the user changes something.

    The run that reads the link rewrites the URL with the values used instead, so later reruns
    (a fragment's, a preview's, a widget's) no longer see the refused value: the notes are kept
    with the values they were given with, and repeated while those values hold on this page.
    """
    ss = st.session_state
    if from_link:
        if notes:
            ss[_NOTES] = (page, notes, _values(fields))
            ss[_FRESH] = True
        else:
            ss.pop(_NOTES, None)
        return notes
    kept = ss.get(_NOTES)
    if kept is None:
        return notes
    kept_page, kept_notes, values = kept
    if kept_page == page and values == _values(fields):
        return list(kept_notes)
    ss.pop(_NOTES, None)
    return notes


def publish(fields: Sequence[Field]) -> None:
    """Keep the widget values past a page switch and write them to the URL."""
    ss = st.session_state
    query = {}
    for f in fields:
        if f.key in ss:
            ss[_SHADOW + f.key] = ss[f.key]
            query[f.key] = f.format(ss[f.key])
    page = ss.get(_PAGE, "")
    ss[_SEEN + page] = dict(query)
    query.update(present.query())  # presenter mode stays on from page to page, and in a copied link
    kept = ss.get(_NOTES)
    if ss.pop(_FRESH, False) and kept is not None and kept[0] == page:
        # the widgets may have filled in values after restore (a preset's fields): later runs compare with those
        ss[_NOTES] = (page, kept[1], _values(fields))
    if ss.pop(_FORCE, False) or dict(st.query_params) != query:
        st.query_params.from_dict(query)


def show_notes(notes: list[str]) -> None:
    # A note repeats what a stranger put in the URL: shown as code, it can never be a link or markup.
    for n in notes:
        st.warning(md_code(n), icon=":material/warning:")
