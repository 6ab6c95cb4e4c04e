"""Links that stay put, and notes that stay: ui.state's URL round trip as a browser sees it.

AppTest keeps the query string the script ended with, whether or not the script told the browser.
A real browser only changes its address bar when the server sends it a new query string (or when
it navigates to another page). `Browser` keeps the address as a browser does: it records the
query strings the server sends, and each rerun it asks for carries the address bar's.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from streamlit.runtime.state import query_params as qp
from streamlit.testing.v1 import AppTest

from tests.apptest import APP, open_page, rerun
from ui.classroom import DEMOS

BY_KEY = {d.key: d for d in DEMOS}


class Browser:
    def __init__(self, monkeypatch, at: AppTest):
        self.at, self.sent = at, []
        original = qp.QueryParams._send_query_param_msg

        def send(params):  # noqa: ANN001
            self.sent.append(dict(parse_qsl(qp.parse.urlencode(params._query_params, doseq=True))))
            original(params)

        monkeypatch.setattr(qp.QueryParams, "_send_query_param_msg", send)
        self.address: dict[str, str] = {}
        self.follow("pages/compare.py", {})  # a first page (the cheapest to draw): later switches are links

    def run(self) -> AppTest:
        """A rerun the browser asks for: with its address bar's query string."""
        self.at.query_params.clear()
        self.at.query_params.update(self.address)
        self.sent.clear()
        rerun(self.at)
        if self.sent:
            self.address = self.sent[-1]
        return self.at

    def follow(self, page: str, query: dict[str, str]) -> AppTest:
        """A page link clicked: the rerun carries the link's query; the address bar changes only
        when the page is another one (the frontend navigates) or when the server says so."""
        other_page = self.page != page
        self.at.query_params.clear()
        self.at.query_params.update(query)
        self.at.switch_page(page)
        self.sent.clear()
        rerun(self.at)
        self.address = self.sent[-1] if self.sent else (dict(query) if other_page else self.address)
        self.page = page
        return self.at

    page = ""


def test_demo_link_from_its_own_page_sets_widgets_and_url_and_the_next_toggle_keeps_it(monkeypatch):
    at = AppTest.from_file(str(APP), default_timeout=120)
    browser = Browser(monkeypatch, at)
    vanishing, clean = BY_KEY["vanishing"], BY_KEY["clean-path"]
    browser.follow("pages/gradient-flow.py", vanishing.query)
    assert at.session_state["gf_depth"] == 56 and browser.address["gf_activation"] == "relu"

    browser.follow(clean.page, clean.query)  # the same page: the frontend keeps its address
    assert at.session_state["gf_depth"] == 20 and at.session_state["gf_activation"] == "sigmoid"
    assert browser.address == clean.query  # the address bar is the demo's: reload and share give it

    at.toggle(key="gf_bn").set_value(True)
    browser.run()
    assert at.session_state["gf_depth"] == 20 and at.session_state["gf_activation"] == "sigmoid"
    assert at.session_state["gf_bn"] is True
    assert browser.address == {**clean.query, "gf_bn": "1"}


def test_demo_link_from_another_page_keeps_the_demo_after_a_toggle(monkeypatch):
    at = AppTest.from_file(str(APP), default_timeout=120)
    browser = Browser(monkeypatch, at)
    demo = BY_KEY["batchnorm"]
    browser.follow(demo.page, demo.query)
    assert browser.address == demo.query
    at.radio(key="gf_nets").set_value("plain")
    browser.run()
    assert at.session_state["gf_bn"] is True and at.session_state["gf_depth"] == 56
    assert browser.address == {**demo.query, "gf_nets": "plain"}


# One refused value per page, and a widget change that is cheap to make there.
BAD = {
    "overview": ("ov_grad_exp", "-99", lambda at: at.toggle(key="ov_skip").set_value(False)),
    "architecture": ("arch_widths", "abc", lambda at: at.toggle(key="arch_batchnorm").set_value(False)),
    "gradient-flow": ("gf_depth", "57", lambda at: at.toggle(key="gf_bn").set_value(True)),
    "train": ("tr_steps", "-5", lambda at: at.number_input(key="tr_seed").set_value(3)),
    # with no runs Compare draws no widget of its fields: set one as a widget would
    "compare": ("cmp_step", "-1", lambda at: at.session_state.__setitem__("cmp_kind", "act_grad")),
    "degradation": ("dg_steps", "-5", lambda at: at.number_input(key="dg_batch_size").set_value(64)),
    # with no runs Inspect draws no widget of its fields either
    "inspect": ("ins_n", "7", lambda at: at.session_state.__setitem__("ins_src", "draw")),
    "why": ("why_grid", "7", lambda at: at.session_state.__setitem__("why_paths", "init56")),
}


def _notes(at: AppTest, key: str) -> list[str]:
    return [w.value for w in at.warning if f"{key}=" in w.value and "ignored" in w.value]


@pytest.mark.parametrize("page", list(BAD))
def test_a_refused_url_value_keeps_its_note_until_the_user_changes_something(page, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    key, raw, change = BAD[page]
    extra = {"arch_preset": "custom", "arch_layout": "blocks"} if page == "architecture" else {}
    at = open_page(page, timeout=120, root_first=True, **{key: raw}, **extra)
    assert len(_notes(at, key)) == 1, [w.value for w in at.warning]
    for _ in range(2):  # later reruns (a fragment's, the preview's) find the URL rewritten: the note stays
        rerun(at)
        assert len(_notes(at, key)) == 1, page
    change(at)
    rerun(at)
    assert _notes(at, key) == [], page


def test_a_check_that_fails_says_what_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = open_page("architecture", root_first=True, arch_preset="custom", arch_layout="blocks", arch_widths="abc")
    (note,) = _notes(at, "arch_widths")
    assert "a valid value" not in note and "whole numbers separated by commas" in note


# ---------------------------------------------------------------- presenter mode


def test_presenter_mode_stays_in_the_url_across_widgets_and_pages_and_turns_off(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=120)
    browser = Browser(monkeypatch, at)
    browser.follow("pages/architecture.py", {"present": "1"})  # a link with presenter mode on
    assert at.session_state["present"] is True and browser.address.get("present") == "1"
    at.toggle(key="arch_batchnorm").set_value(False)
    browser.run()
    assert browser.address.get("present") == "1" and browser.address.get("arch_batchnorm") == "0"
    browser.follow("pages/gradient-flow.py", {})  # the sidebar's page list: no query string
    assert at.session_state["present"] is True and browser.address.get("present") == "1"
    at.toggle(key="present").set_value(False)
    browser.run()
    assert at.session_state["present"] is False and "present" not in browser.address


def test_presenter_mode_speaks_in_plain_words_and_says_how_long_each_demo_takes(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = open_page(None, timeout=120)
    captions = " ".join(c.value for c in at.caption)
    assert BY_KEY["vanishing"].caption in captions and "on this machine" in captions
    at = open_page(None, timeout=120, present="1")
    captions = " ".join(c.value for c in at.caption)
    assert all(d.plain in captions for d in DEMOS) and BY_KEY["vanishing"].caption not in captions
