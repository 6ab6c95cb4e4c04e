"""What the live pages share: the one job manager, who this browser session is, and each
followed job's history, fetched incrementally (`job.since(cursor)`) and kept per session.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from resnet_core import compare, data, refresh, runs
from resnet_core.jobs import Job, JobManager
from resnet_core.limits import env_float

_HISTORY = "_live_history"


@st.cache_resource
def _manager_or_reason() -> tuple[JobManager | None, str]:
    """The server's one job manager, or why it could not be made: a backend that cannot start (Ray asked
    for by RESNET_RAY_ADDRESS but not installed, a cluster that does not answer, a RESNET_JOB_BACKEND that
    names none) is the server's setting, fixed until it restarts, so the reason is kept as the manager is."""
    _limit_cpu_threads()
    try:
        return JobManager(root=runs.default_root(), data_root=data.data_root(), idle_s=_idle_s()), ""
    except (ImportError, ConnectionError, ValueError) as e:
        return None, str(e).splitlines()[0] if str(e) else type(e).__name__


@st.cache_resource
def redraws() -> refresh.Ledger:
    """The server's one ledger of its live views' redraw times, which paces them all (resnet_core/refresh.py)."""
    return refresh.Ledger()


def view_id() -> str:
    """This tab's live view, for the ledger: the session's id (a tab has one live view)."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def unavailable() -> str:
    """Why this server cannot train ("" when it can)."""
    return _manager_or_reason()[1]


def manager() -> JobManager:
    """One manager per server process, shared by every browser session. Where there is none, the page
    says why in one line (training is off on this server until it restarts) and stops there."""
    m, reason = _manager_or_reason()
    if m is None:
        st.error(f"Training is off on this server: {reason}. Fix the setting and restart the server; "
                 "the pages that do not train still work.", icon=":material/error:")
        st.stop()
    return m


def jobs(owner: str | None = None) -> list[Job]:
    """The server's jobs (of `owner`, where given); none on a server that cannot train."""
    return [] if unavailable() else manager().jobs(owner=owner)


def _clear() -> None:
    _manager_or_reason.clear()
    redraws.clear()


manager.clear = _clear  # type: ignore[attr-defined]  # tests: a fresh manager per runs folder, a fresh ledger


def warm() -> None:
    """At server start-up (app.py): the job manager, which starts warming its worker processes'
    forkserver; with the thread backend, PyTorch and the dataset in this process instead."""
    if unavailable():
        return
    if manager().backend.name == "thread":
        from resnet_core.train import warm_up

        warm_up()


def _idle_s() -> float:
    """Seconds a job may go unwatched before the idle rule stops it: RESNET_JOB_IDLE_S, else 600."""
    return env_float("RESNET_JOB_IDLE_S", 600.0)


def _limit_cpu_threads() -> None:
    """Leave a core to the server: with every core busy in PyTorch's thread pool, page
    reruns and the training thread fight, and each goes many times slower (bench/RESULTS.md).
    RESNET_TORCH_THREADS overrides."""
    import torch

    wanted = os.environ.get("RESNET_TORCH_THREADS", "")
    threads = int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)


def session_owner() -> str:
    """Who is asking, for the queue limit per browser session and for "your runs".

    The browser, not the tab: Streamlit gives each browser a cookie holding a random token
    (its XSRF protection), and the owner is a salted hash of that token. More tabs, or a reload,
    are the same owner, so opening tabs does not multiply a student's queue. Where there is no
    such cookie (AppTest, a protocol client, XSRF protection turned off) it is the tab's session.
    """
    ctx = get_script_run_ctx()
    if ctx is None:
        return "local"
    token = _browser_token()
    return "browser-" + hashlib.sha256(_SALT + token).hexdigest()[:16] if token else ctx.session_id


_SALT = os.urandom(16)  # the owner never reveals the token, and means nothing to another server


def _browser_token() -> bytes | None:
    try:
        from streamlit.web.server.starlette.starlette_app_utils import decode_xsrf_token_string

        token, _ = decode_xsrf_token_string(st.context.cookies.get("_streamlit_xsrf", ""))
    except Exception:  # an internal of Streamlit's: if it moves, fall back to the tab's session
        return None
    return token or None


@dataclass
class History:
    cursor: tuple[int, int] | None = None
    metric_parts: list[pd.DataFrame] = field(default_factory=list)
    grad_parts: list[pd.DataFrame] = field(default_factory=list)
    _metrics: pd.DataFrame | None = None
    _grads: pd.DataFrame | None = None

    def pull(self, job: Job) -> None:
        metrics, grads, self.cursor = job.since(self.cursor)
        if len(metrics):
            self.metric_parts.append(metrics)
            self._metrics = None
        if len(grads):
            self.grad_parts.append(grads)
            self._grads = None

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            parts = [p for p in self.metric_parts if len(p)]
            self._metrics = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
                columns=runs.METRICS_SCHEMA.names)
            self.metric_parts = [self._metrics]
        return self._metrics

    @property
    def grads(self) -> pd.DataFrame:
        if self._grads is None:
            parts = [p for p in self.grad_parts if len(p)]
            self._grads = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
                columns=runs.GRADS_SCHEMA.names)
            self.grad_parts = [self._grads]
        return self._grads


def history(job: Job) -> History:
    """This session's copy of `job`'s rows, brought up to date."""
    store = st.session_state.setdefault(_HISTORY, {})
    h = store.setdefault(job.id, History())
    h.pull(job)
    return h


def block_values(grads: pd.DataFrame, kind: str, blocks: list[str], step: int | None = None) -> dict[str, float]:
    """One magnitude per block at `step` (default: the latest) for colouring the diagram.

    act_grad is measured at block outputs already; layer kinds are combined per block:
    gradients and weight norms as the root of the sum of squares (the norm of the block's
    parameters taken together), update ratios as the mean.
    """
    if grads is None or not len(grads):
        return {}
    at, rows = compare.rows_at(grads, kind, step)
    if at is None:
        return {}
    if kind == "act_grad":
        return {n: float(v) for n, v in zip(rows["layer"], rows["value"], strict=True) if n in blocks}
    out: dict[str, float] = {}
    for b in blocks:
        vals = rows["value"][rows["layer"].str.startswith(b + ".")].to_numpy()
        if len(vals):
            out[b] = float(vals.mean() if kind == "update_ratio" else np.sqrt((vals ** 2).sum()))
    return out


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0:  # NaN: no rate yet
        return "–"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"

