"""The server's start: what `streamlit run app.py` does before anybody visits.

app.py holds an `st.App` (Streamlit's ASGI app, which `streamlit run` finds in the file and serves)
whose lifespan calls `start()` as the server starts. Without it, nothing of the app runs until the
first browser connects, and that first visitor waits for everything a process does once: importing
PyTorch, its compiler stack (the first forward pass on the meta device imports torch._dynamo and
sympy), the sizes, FLOPs and time estimates of the sidebar's classroom demos, the shipped
recordings. `start()` does that in a background thread while the server already answers, so a
class that arrives a minute after the teacher started the server finds it warm, and an early visitor
waits no longer than before (a page that needs a module still being imported waits for that import,
it does not import it twice). It also switches off Streamlit's pages-folder mode before the first
session (see ui/frame.py): app.py's st.navigation routes every URL from the first run.

The warm-up prints one line to the server's log when it is done, with the time of each step; a step
that fails is named there and skipped, and the page that needs it then does the work itself.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

WARMED_PREFIX = "ResNet Explainer: warmed up"  # the log line's start (bench/, tests/)


@dataclass
class Warmup:
    """What the start-up warm-up did: each step's seconds, or its error."""

    steps: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)

    def line(self) -> str:
        parts = [f"{name} {s:.1f} s" for name, s in self.steps.items()]
        parts += [f"{name} failed: {why}" for name, why in self.failed.items()]
        return f"{WARMED_PREFIX} in {self.seconds:.1f} s ({', '.join(parts)})"


_STATE: Warmup | None = None
_LOCK = threading.Lock()


def state() -> Warmup | None:
    """This process's warm-up, once `start()` has begun it (None before, and where no st.App started it)."""
    return _STATE


def _imports() -> None:
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import torch  # noqa: F401

    import resnet_core.anatomy  # noqa: F401
    import resnet_core.explain  # noqa: F401
    import resnet_core.figures.diagram  # noqa: F401
    import resnet_core.figures.explain  # noqa: F401
    import resnet_core.figures.gradflow  # noqa: F401
    import resnet_core.probe  # noqa: F401
    import ui.classroom  # noqa: F401  (its demos are built, and their configs checked, on import)


def _demo_links() -> None:
    """What the sidebar's demo links compute on every page: each demo's time estimate (its net's size
    and FLOPs, cached in resnet_core) and its shipped recording (cached per server)."""
    from ui import classroom

    for demo in classroom.DEMOS:
        classroom.duration(demo)
        if demo.quick:
            classroom.duration(demo, demo.quick_query())
        classroom.shipped(demo)


def _overview() -> None:
    """The Overview's architecture diagram: the anatomy of ResNet-20 with and without skips (a forward
    pass on the meta device), cached in resnet_core, where the page finds it. (The page's demo nets and
    digits are in its own st.cache_resource, which only the page can fill.)"""
    from resnet_core import anatomy
    from resnet_core.config import cifar_config

    for skip in (True, False):
        anatomy.describe(cifar_config(20, in_channels=1, image_size=28, skip=skip))


def _jobs() -> None:
    """The job manager, which starts its worker processes' forkserver (ui/live.py): last, so that the
    workers' own imports do not compete with the steps above."""
    from ui import live

    live.warm()


STEPS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("imports", _imports),
    ("demo links", _demo_links),
    ("overview", _overview),
    ("job manager", _jobs),
)


def warm(steps: tuple[tuple[str, Callable[[], Any]], ...] | None = None, out: Warmup | None = None) -> Warmup:
    """Run each step (STEPS by default), timed; a failing step is noted and the next one runs. Prints
    the summary line."""
    w = out if out is not None else Warmup()
    steps = STEPS if steps is None else steps
    t0 = time.perf_counter()
    # The caches Streamlit keeps per server (st.cache_*) work outside a script run, but say so on each
    # call ("missing ScriptRunContext"): quiet here, where that is expected.
    quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name, fn in steps:
            t = time.perf_counter()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a warm-up must never take the server down
                w.failed[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            else:
                w.steps[name] = time.perf_counter() - t
    finally:
        quiet.setLevel(level)
        w.seconds = time.perf_counter() - t0
        w.done.set()
    print(w.line(), file=sys.stderr, flush=True)
    return w


def start() -> Warmup:
    """Once per process: Streamlit's pages-folder mode off, and the warm-up in a daemon thread."""
    global _STATE
    with _LOCK:
        if _STATE is not None:
            return _STATE
        from streamlit.runtime.pages_manager import PagesManager

        # None means "decide on the first session"; False now means app.py's st.navigation routes the
        # first session too, instead of a pre-navigation run that lists the pages/ folder's files.
        PagesManager.uses_pages_directory = False
        _STATE = Warmup()
        threading.Thread(target=warm, kwargs={"out": _STATE}, name="resnet-warm-up", daemon=True).start()
        return _STATE


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """st.App's start-up and shut-down hook: the warm-up starts, and the server serves at once."""
    start()
    yield
