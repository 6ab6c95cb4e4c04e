"""The live view's refresh interval: the base on a machine with room, slower while it is busy."""

from __future__ import annotations

import pytest

from resnet_core import refresh


@pytest.mark.parametrize(("redraw_s", "load", "cores", "expected"), [
    (0.05, 0.5, 8, 0.5),  # room to spare: the base
    (0.05, 2.5, 4, 0.5),  # 2.5 processes on the 3 cores training leaves free: still room
    (0.05, 2.5, 2, 2.0),  # a 2-core laptop, training + server + browser: 2.5 for its one spare core, 1.25 s -> 2 s
    (0.05, 1.8, 2, 1.0),  # 1.8 wanting the one spare core: 0.9 s, the 1 s rung
    (0.30, 0.5, 8, 2.0),  # a 0.3 s redraw comes at most every 1.5 s: the 2 s rung
    (0.15, 0.5, 8, 1.0),  # 0.75 s: the 1 s rung
    (3.00, 0.5, 8, 16.0),  # slower than the ladder: its top
    (0.05, 40.0, 2, 16.0),  # a swamped machine: the top, no more
    (0.05, float("nan"), 2, 0.5),  # no load figure: the redraw time alone
])
def test_live_interval_rises_with_the_redraw_time_and_the_load(redraw_s, load, cores, expected):
    assert refresh.live_interval(redraw_s, load, cores) == expected


def test_a_base_off_the_ladder_is_its_own_first_rung():
    assert refresh.live_interval(0.01, 0.0, 8, base=0.3) == 0.3
    assert refresh.live_interval(0.10, 0.0, 8, base=0.3) == 0.5  # 0.5 s wanted: the next rung
    assert refresh.live_interval(0.01, 0.0, 8, base=6.0) == 6.0  # above the ladder: the base


def test_the_interval_changes_only_to_another_rung_and_not_too_often():
    assert refresh.should_switch(0.5, 2.0, since_s=30.0)
    assert not refresh.should_switch(0.5, 2.0, since_s=3.0)
    assert not refresh.should_switch(2.0, 2.0, since_s=30.0)


@pytest.mark.parametrize(("raw", "expected"), [("", 0.5), ("1.5", 1.5), ("0.05", 0.5), ("11", 0.5), ("fast", 0.5)])
def test_the_base_comes_from_the_environment_within_bounds(raw, expected):
    assert refresh.base_interval({"RESNET_LIVE_REFRESH_S": raw}) == expected


def test_the_ledger_adds_up_every_current_view_and_forgets_closed_ones():
    now = [0.0]
    ledger = refresh.Ledger(clock=lambda: now[0])
    assert ledger.record("a", 0.2, 0.5) == pytest.approx(0.2)  # one view alone: its own redraw time
    assert ledger.record("a", 0.1, 0.5) == pytest.approx(0.7 * 0.2 + 0.3 * 0.1)  # smoothed over a few redraws
    for i in range(19):
        ledger.record(f"s{i}", 0.15, 16.0)
    assert ledger.views() == 20
    a = 0.7 * (0.7 * 0.2 + 0.3 * 0.1) + 0.3 * 0.17
    total = ledger.record("a", 0.17, 0.5)
    assert total == pytest.approx(19 * 0.15 + a)
    # 20 views of ~0.15 s together: each waits DUTY x 3 s -> the 16 s rung, not its own 0.75 s -> 1 s
    assert refresh.live_interval(total, 1.0, 2) == 16.0
    assert refresh.live_interval(0.15, 1.0, 2) == 1.0
    now[0] = 6.5  # "a" redraws every 0.5 s: 6.5 s without a redraw is twice that and the grace, so it closed
    assert ledger.views() == 19 and ledger.record("s0", 0.15, 16.0) == pytest.approx(19 * 0.15)
    ledger.forget("s0")  # its run ended
    now[0] = 2 * 16.0 + refresh.GRACE_S + 1.0  # the others closed their tabs
    assert ledger.views() == 0
    assert ledger.record("b", 0.3, 1.0) == pytest.approx(0.3)
