"""The server's start-up warm-up (ui/boot.py): its steps, its log line, and what it leaves warm.

The warm-up as `streamlit run app.py` runs it, in a real server, is checked by the first-visit tests
(tests/test_browser_navigation.py): their fresh servers must log the line with every step done.
"""

from __future__ import annotations

import threading

import pytest
from streamlit.runtime.pages_manager import PagesManager

from ui import boot


def test_each_step_is_timed_and_a_failing_one_does_not_stop_the_rest(capsys):
    ran = []

    def fails():
        ran.append("fails")
        raise RuntimeError("no dataset here\nsecond line")

    w = boot.warm(steps=(("first", lambda: ran.append("first")), ("broken", fails),
                         ("last", lambda: ran.append("last"))))
    assert ran == ["first", "fails", "last"]
    assert set(w.steps) == {"first", "last"} and all(s >= 0 for s in w.steps.values())
    assert w.failed == {"broken": "RuntimeError: no dataset here"}
    assert w.done.is_set() and w.seconds >= sum(w.steps.values())
    line = capsys.readouterr().err.strip()
    assert line == w.line()
    assert line.startswith(boot.WARMED_PREFIX + " in ")
    assert "first " in line and "broken failed: RuntimeError: no dataset here" in line


def test_start_clears_the_pages_folder_mode_and_runs_once(monkeypatch):
    calls = []
    gate = threading.Event()
    monkeypatch.setattr(boot, "STEPS", (("counted", lambda: (calls.append(1), gate.wait(5))),))
    monkeypatch.setattr(boot, "_STATE", None)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    first = boot.start()
    second = boot.start()  # a second start (another App in the process) changes nothing
    assert first is second is boot.state()
    assert PagesManager.uses_pages_directory is False  # decided now, before any session: st.navigation routes
    assert not first.done.is_set()  # in the background: start() did not wait for the steps
    gate.set()
    assert first.done.wait(10)
    assert calls == [1] and list(first.steps) == ["counted"]


@pytest.mark.timeout(300)
def test_the_real_steps_leave_the_demo_links_and_the_overview_warm(tmp_path, monkeypatch):
    """After the imports, demo-link and overview steps, what the first visitor's page would compute is
    in resnet_core's caches: the demos' sizes and FLOPs, the diagram's anatomy of ResNet-20."""
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RESNET_DATA_DIR", str(tmp_path / "data"))
    from resnet_core import anatomy, speed

    anatomy.describe.cache_clear()
    speed.forward_flops.cache_clear()
    steps = tuple((name, fn) for name, fn in boot.STEPS if name != "job manager")
    w = boot.warm(steps=steps)
    assert not w.failed, w.failed
    assert list(w.steps) == ["imports", "demo links", "overview"]
    assert anatomy.describe.cache_info().currsize >= 2  # ResNet-20 with and without skips
    assert speed.forward_flops.cache_info().currsize >= 1  # their time estimates
    from resnet_core.config import cifar_config

    before = anatomy.describe.cache_info().hits
    anatomy.describe(cifar_config(20, in_channels=1, image_size=28, skip=True))  # what the Overview asks for
    assert anatomy.describe.cache_info().hits == before + 1
