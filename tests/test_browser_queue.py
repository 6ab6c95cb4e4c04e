"""The queue limit per browser session, in real Chromium: it counts a browser's tabs together.

One server with one job running at a time and RESNET_MAX_QUEUED_PER_SESSION=1. A browser's first
tab trains, its second queues, and its third is refused with the limit's name, although that tab
itself has nothing queued. Another browser (a new context: its own cookies) may still queue.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_or_say
from tests.test_browser_faults import TINY, Server, open_train

pytestmark = pytest.mark.browser
LONG = f"{TINY}&tr_steps=20000"


def press_start(tab) -> None:
    tab.get_by_role("button", name="Start").click()
    wait_or_say(tab, "text=/State\\s*(running|queued)|max_queued_per_session/", 60_000, "queue-start-not-answered")


def test_more_tabs_do_not_multiply_a_browsers_queue(browser, tmp_path):
    server = Server(tmp_path, RESNET_MAX_QUEUED_PER_SESSION="1", RESNET_MAX_RUNNING_JOBS="1")
    contexts = []
    try:
        url = server.start()
        first, tab1 = open_train(browser, url, LONG)
        contexts.append(first)
        press_start(tab1)
        tab1.wait_for_selector("text=running", timeout=60_000)
        # The run goes on with its tab on another site (the idle rule allows 10 minutes unwatched), and a
        # live view redrawing twice a second in it would take the core the other tabs need.
        tab1.goto("about:blank")

        tab2 = first.new_page()  # the same browser: another tab
        tab2.goto(f"{url}/train?{LONG}")
        tab2.get_by_role("button", name="Start").wait_for(timeout=60_000)
        press_start(tab2)
        tab2.wait_for_selector("text=queued", timeout=30_000)

        tab3 = first.new_page()
        tab3.goto(f"{url}/train?{LONG}")
        tab3.get_by_role("button", name="Start").wait_for(timeout=60_000)
        press_start(tab3)
        refusal = tab3.locator('[data-testid="stAlertContentError"]')
        refusal.wait_for(timeout=30_000)
        assert "max_queued_per_session" in refusal.inner_text()

        second, other = open_train(browser, url, LONG)  # another browser is not counted with the first
        contexts.append(second)
        press_start(other)
        other.wait_for_selector("text=queued", timeout=30_000)
        assert other.locator('[data-testid="stAlertContentError"]').count() == 0
    finally:
        for c in contexts:
            c.close()
        server.stop()
