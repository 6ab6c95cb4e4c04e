"""How often a live page redraws while a run trains: more slowly while the machine is busy.

A student's laptop runs the server, the training and the browser on the same few cores. Each
redraw of the Train page's live view costs the server its fragment rerun and figure building and
the browser its drawing (bench/bench_watch.py measured ~0.2 s and ~0.4 s of CPU a redraw on a
2-core machine), and at two redraws a second that took most of the core the training needed
(bench/RESULTS.md). So the interval grows with two measured signals:

- the redraw time of every live view on the server together: each view records its redraws in one
  `Ledger` per server, and where the views' latest redraws add up to `t` seconds, each asks for
  its next at most every DUTY x `t` seconds, so all of them together keep the server busy at most
  1/DUTY of the time. One view alone paces by its own redraws; 20 students watching one run on a
  2-core laptop share the server's spare core instead of taking all of it (bench/bench_watched.py);
- the 1-minute load average beyond the cores the training leaves free: with `cores` cores and one
  of them training, a load of L has L / (cores - 1) processes wanting each spare core, and the
  interval is the base times that (a machine with room keeps the base).

The interval is rounded up to a rung of LADDER, so that small changes in the signals do not
change it (a change costs the page a full rerun), and never exceeds the ladder's top.
"""

from __future__ import annotations

import math
import threading
import time

from .limits import env_float

BASE_S = 0.5  # the live view's interval on a machine with room (RESNET_LIVE_REFRESH_S overrides)
LADDER = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # the intervals a live view uses; the last is the slowest
DUTY = 5.0  # a redraw that took t seconds comes at most every DUTY * t seconds
SWITCH_AFTER_S = 10.0  # a live view changes its interval at most this often
GRACE_S = 5.0  # a view that has not redrawn for twice its interval and this long has closed: it no longer counts


def base_interval(env: dict[str, str] | None = None) -> float:
    """The shortest interval: RESNET_LIVE_REFRESH_S (0.1 to 10 s), else BASE_S."""
    return env_float("RESNET_LIVE_REFRESH_S", BASE_S, lo=0.1, hi=10.0, zero_ok=True, env=env)


def live_interval(redraw_s: float, load: float, cores: int, base: float = BASE_S) -> float:
    """Seconds between a live view's redraws, given the live views' redraw wall time together (the
    ledger's total), the 1-minute load average and the machine's cores: a rung of the ladder from
    `base` up (never below `base`)."""
    spare = max(1, cores - 1)  # one core trains
    wanted = max(base, DUTY * max(0.0, redraw_s), base * load / spare if math.isfinite(load) else base)
    rungs = [base, *(r for r in LADDER if r > base)]
    return next((r for r in rungs if r >= wanted - 1e-9), rungs[-1])


def should_switch(current: float, wanted: float, since_s: float) -> bool:
    """Whether a live view refreshing every `current` seconds moves to `wanted`, `since_s` seconds
    after its last change: only to another rung, and not sooner than SWITCH_AFTER_S."""
    return not math.isclose(current, wanted) and since_s >= SWITCH_AFTER_S


class Ledger:
    """The latest redraw time of each live view on a server, smoothed over a few redraws; thread-safe
    (every session's script thread records into the one ledger)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._views: dict[str, tuple[float, float, float]] = {}  # view -> (smoothed seconds, last seen, interval)

    def record(self, view: str, seconds: float, every: float) -> float:
        """Note a redraw of `view`, which redraws every `every` seconds, that took `seconds`; returns every
        current view's redraw time together."""
        now = self._clock()
        with self._lock:
            old = self._views.get(view)
            smooth = seconds if old is None else 0.7 * old[0] + 0.3 * seconds
            self._views[view] = (max(0.0, smooth), now, every)
            self._drop(now)
            return sum(v for v, _, _ in self._views.values())

    def forget(self, view: str) -> None:
        """`view` stopped redrawing (its run ended)."""
        with self._lock:
            self._views.pop(view, None)

    def views(self) -> int:
        with self._lock:
            self._drop(self._clock())
            return len(self._views)

    def _drop(self, now: float) -> None:
        for k in [k for k, (_, seen, every) in self._views.items() if now - seen > 2 * every + GRACE_S]:
            del self._views[k]
