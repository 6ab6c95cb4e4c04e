"""The "Why it works" page's background analyses: one queue for the server, progress while they run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from resnet_core.why.tasks import Task, TaskQueue


@st.cache_resource
def queue() -> TaskQueue:
    return TaskQueue()


def pair_work(fns: list[Callable[[Callable[[float], None], Callable[[], bool]], Any]]):
    """One task that runs `fns` in turn (the residual net, then its twin), its progress spread over them."""
    def work(progress, should_stop):
        out = []
        for i, fn in enumerate(fns):
            out.append(fn(lambda f, i=i: progress((i + f) / len(fns)), should_stop))
        return out
    return work


def paths_task(run_dir: Any = None, depth: int | None = None):
    """Path lengths of a record's trained net, or of a CIFAR-layout ResNet of `depth` at init on 1x28x28."""
    from resnet_core.config import cifar_config
    from resnet_core.why.paths import at_init, paths_run

    def work(progress, should_stop):
        if run_dir is not None:
            return paths_run(run_dir, progress=progress)
        return at_init(cifar_config(depth, in_channels=1, image_size=28), progress=progress)
    return work


def progress_view(keys: dict[str, str]) -> None:
    """Progress bars of the tasks in `keys` ({label: task key}) while any is queued or running; a full
    rerun when they have all finished, so the page draws the results and stops polling."""
    q = queue()
    tasks = {label: q.get(k) for label, k in keys.items()}
    live = {label: t for label, t in tasks.items() if t is not None and not t.done}
    if not live:
        return

    def poll() -> None:
        if all(t.done for t in live.values()):
            st.rerun()
        for label, t in live.items():
            place = q.place(t.key)
            text = f"{label}: waiting in the queue (place {place})" if t.state == "queued" else \
                f"{label}: {t.progress:.0%}"
            st.progress(t.progress, text=text)

    st.fragment(run_every=0.5)(poll)()


def result(key: str) -> Task | None:
    t = queue().get(key)
    return t if t is not None and t.done else None
