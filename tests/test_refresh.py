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
    (3.00, 0.5, 8, 4.0),  # slower than the ladder: its top
    (0.05, 40.0, 2, 4.0),  # a swamped machine: the top, no more
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
