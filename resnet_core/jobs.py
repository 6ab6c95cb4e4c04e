"""Background training jobs shared by every browser session of one server.

One `JobManager` per process (the page holds it with st.cache_resource; this module knows
nothing of streamlit). Each job trains in a daemon thread through train.train(), writing its
record with recorder.RunWriter and keeping its rows in memory, so a page asks only for what
is new (`job.since(cursor)`) and a cheap `job.snapshot()`. At most `max_running` jobs train at
once; the rest wait in order and know their place. A job checks its flags every step and,
while paused, waits on an Event with a timeout, so pause/resume/stop act within a step
(well under a second for the nets a class trains on a CPU). A job nobody has polled for
`idle_s` seconds is stopped, so a closed tab never leaves a thread training for nobody.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import device as devices
from .config import ModelConfig, TrainConfig
from .limits import LIMITS, LimitError
from .recorder import RunWriter
from .runs import GRADS_SCHEMA, KINDS, METRICS_SCHEMA, load_run
from .train import TrainResult, check_limits, train

log = logging.getLogger(__name__)
STATES = ("queued", "running", "paused", "finished", "stopped", "failed", "diverged", "interrupted")
ACTIVE = ("queued", "running", "paused")


class Job:
    """One training run; also the train() callback that feeds its in-memory history and flags."""

    def __init__(self, manager: JobManager, owner: str, label: str, model_cfg: ModelConfig,
                 train_cfg: TrainConfig, options: dict[str, Any]):
        self.id = secrets.token_hex(8)  # unguessable: knowing the id is what lets another tab attach
        self.manager, self.owner, self.label = manager, owner, label
        self.model_cfg, self.train_cfg, self.options = model_cfg, train_cfg, options
        self.state, self.message = "queued", ""
        self.step, self.device, self.run_dir = 0, "", ""
        self.samples_per_s = math.nan
        self.train_loss = self.test_accuracy = math.nan
        self.layers: list[str] = []
        self.blocks: list[str] = []
        self.submitted_at, self.last_poll = time.time(), time.monotonic()
        self.thread: threading.Thread | None = None
        self.writer: RunWriter | None = None
        self._rows: list[dict[str, Any]] = []
        self._grads: list[tuple[int, np.ndarray]] = []  # (step, values in kinds-then-layers order)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._stop_reason = ""
        self._released = False  # history dropped from memory, read from the record

    # ------------------------------------------------------------ what pages call

    def since(self, cursor: tuple[int, int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, tuple[int, int]]:
        """Metrics and grads rows added after `cursor` (None: from the start), and the next cursor.

        The cursor counts metrics rows and logged steps. Once a finished job's history has been
        released from memory (see JobManager.keep_history) the rows come from its record instead.
        """
        self.touch()
        m0, g0 = cursor or (0, 0)
        with self._lock:
            on_disk = self._released
            rows, grads = self._rows[m0:], self._grads[g0:]
        if on_disk:
            return self._since_record(m0, g0)
        new = (m0 + len(rows), g0 + len(grads))
        metrics = pd.DataFrame(rows, columns=METRICS_SCHEMA.names)
        if not grads:
            return metrics, GRADS_SCHEMA.empty_table().to_pandas(), new
        names = self.layers * 3 + self.blocks
        kinds = [k for k in KINDS[:3] for _ in self.layers] + [KINDS[3]] * len(self.blocks)
        frame = pd.DataFrame({
            "step": np.repeat(np.array([s for s, _ in grads], np.int64), len(names)),
            "layer": np.tile(np.array(names, dtype=object), len(grads)),
            "kind": np.tile(np.array(kinds, dtype=object), len(grads)),
            "value": np.concatenate([v for _, v in grads]).astype(np.float64),
        })
        return metrics, frame, new

    def _since_record(self, m0: int, g0: int) -> tuple[pd.DataFrame, pd.DataFrame, tuple[int, int]]:
        rec = load_run(self.run_dir)
        metrics = rec.metrics if rec.metrics is not None else METRICS_SCHEMA.empty_table().to_pandas()
        grads = rec.grads if rec.grads is not None else GRADS_SCHEMA.empty_table().to_pandas()
        steps = grads["step"].unique()  # logged steps, in the order they were written
        new_grads = grads[grads["step"].isin(steps[g0:])].reset_index(drop=True)
        return metrics.iloc[m0:].reset_index(drop=True), new_grads, (len(metrics), len(steps))

    def release_history(self) -> None:
        """Drop the in-memory rows of a finished job with a record; since() then reads the record."""
        with self._lock:
            if self.done and self.run_dir and self.writer is not None and self.writer.started:
                self._rows, self._grads, self._released = [], [], True

    def snapshot(self, touch: bool = True) -> dict[str, Any]:
        """Cheap status for a page; `touch=False` for listings that must not keep a job alive."""
        if touch:
            self.touch()
        steps = self.train_cfg.steps
        rate = self.samples_per_s
        eta = (steps - self.step) * self.train_cfg.batch_size / rate if rate and rate > 0 else math.nan
        return {"id": self.id, "label": self.label, "state": self.state, "step": self.step, "steps": steps,
                "samples_per_s": rate, "eta_s": eta if self.state in ACTIVE else 0.0, "device": self.device,
                "queue_place": self.manager.queue_place(self), "message": self.message, "run_dir": self.run_dir,
                "train_loss": self.train_loss, "test_accuracy": self.test_accuracy,
                "dataset": self.train_cfg.dataset, "submitted_at": self.submitted_at}

    def touch(self) -> None:
        self.last_poll = time.monotonic()

    def pause(self) -> None:
        with self._lock:  # state changes race with the training thread's on_end
            if self.state == "running":
                self._running.clear()
                self.state = "paused"

    def resume(self) -> None:
        with self._lock:
            if self.state == "paused":
                self.state = "running"
            self._running.set()

    def stop(self, reason: str = "") -> None:
        self._stop_reason = reason
        self._stop.set()
        self._running.set()  # wake a paused loop so it sees the stop at once
        self.manager._dequeue(self)

    @property
    def done(self) -> bool:
        return self.state not in ACTIVE

    # ------------------------------------------------------------ train() callbacks

    def on_start(self, info: dict[str, Any]) -> None:
        self.layers, self.blocks, self.device = list(info["layers"]), list(info["blocks"]), str(info["device"])
        if self.writer is not None and self.writer.started:  # the folder exists from now on
            self.run_dir = str(self.writer.run_dir)

    def on_log(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
        self.step, self.train_loss = row["step"], row["loss"]
        rate = row["samples_per_s"]  # of one log interval: smoothed so the ETA does not jump about
        self.samples_per_s = rate if not math.isfinite(self.samples_per_s) else 0.9 * self.samples_per_s + 0.1 * rate

    def on_eval(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
        self.test_accuracy = row["accuracy"]

    def on_grads(self, step: int, values: dict[str, np.ndarray]) -> None:
        flat = np.concatenate([np.asarray(values[k], np.float32).ravel() for k in KINDS])
        with self._lock:
            self._grads.append((step, flat))

    def should_stop(self) -> bool:
        while not self._stop.is_set() and not self._idle():
            if self._running.is_set():
                return False
            self._running.wait(0.25)  # paused: wake often enough to honour a stop or the idle rule
            if self.writer is not None:
                self.writer.heartbeat()
        return True

    def on_end(self, result: TrainResult) -> None:
        self.step = result.step
        if math.isfinite(result.samples_per_s):
            self.samples_per_s = result.samples_per_s
        message = result.message
        if result.status == "stopped" and self._stop_reason:
            message = f"{message}: {self._stop_reason}"
        with self._lock:
            self.message, self.state = message, result.status

    def _idle(self) -> bool:
        if time.monotonic() - self.last_poll <= self.manager.idle_s:
            return False
        self._stop_reason = self._stop_reason or f"nobody looked at it for {self.manager.idle_s:g} s"
        return True


class JobManager:
    """Process-wide: submit, find, control and list jobs; see the module docstring."""

    def __init__(self, root: str | Path | None = None, limits: Any = LIMITS, max_running: int | None = None,
                 idle_s: float = 600.0, keep_finished: int = 100, keep_history: int = 8):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.root, self.limits, self.idle_s, self.keep_finished = root, limits, idle_s, keep_finished
        self.keep_history = keep_history  # finished jobs whose rows stay in memory; older ones read from disk
        self.max_running = max_running or limits.max_running_jobs or max(1, gpus)
        self._free_gpus = list(range(gpus))
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._running: set[Job] = set()
        self._lock = threading.RLock()
        self._closed = False

    def submit(self, model_cfg: ModelConfig, train_cfg: TrainConfig, owner: str = "local", label: str = "",
               data_root: str | None = None, download: bool = False) -> str:
        """A new job's id; LimitError/ConfigError/ValueError (refused, nothing started) say why not."""
        check_limits(model_cfg, train_cfg, self.limits)
        devices.resolve(train_cfg.device)  # a device this machine lacks is refused now, not later
        with self._lock:
            if self._closed:
                raise RuntimeError("the job manager is shut down")
            for job in [j for j in self._queue if j._idle()]:
                job.stop()
                job.state, job.message = "stopped", f"stopped while queued: {job._stop_reason}"
            if self._queue or len(self._running) >= self.max_running:  # this one would wait
                mine = sum(j.owner == owner for j in self._queue)
                if mine >= self.limits.max_queued_per_session:
                    raise LimitError("max_queued_per_session", mine + 1, self.limits.max_queued_per_session,
                                     " queued jobs")
                if len(self._queue) >= self.limits.max_queued_total:
                    raise LimitError("max_queued_total", len(self._queue) + 1, self.limits.max_queued_total,
                                     " queued jobs")
            job = Job(self, owner, label, model_cfg, train_cfg, {"data_root": data_root, "download": download})
            self._jobs[job.id] = job
            self._queue.append(job)
            self._schedule()
            return job.id

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id) if isinstance(job_id, str) else None

    def jobs(self, owner: str | None = None) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_place(self, job: Job) -> int | None:
        """1 for the next job to start; None when not waiting."""
        with self._lock:
            return self._queue.index(job) + 1 if job in self._queue else None

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job and wait (up to `timeout` s in all) for their threads to end."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.done:
                job.stop("the server is shutting down")
        deadline = time.monotonic() + timeout
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------ scheduling

    def _dequeue(self, job: Job) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job.state, job.message = "stopped", "stopped before it started"

    def _schedule(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_running and not self._closed:
                job = self._queue.pop(0)
                if job._idle():  # its page closed while it waited: never start it
                    job.state, job.message = "stopped", f"stopped while queued: {job._stop_reason}"
                    continue
                gpu = self._free_gpus.pop(0) if self._free_gpus and job.train_cfg.device in ("auto", "cuda") else None
                job.state = "running"
                self._running.add(job)
                job.thread = threading.Thread(target=self._run, args=(job, gpu), name=f"job-{job.id}", daemon=True)
                job.thread.start()

    def _run(self, job: Job, gpu: int | None) -> None:
        try:
            dev = f"cuda:{gpu}" if gpu is not None else None
            job.writer = RunWriter(job.model_cfg, job.train_cfg, root=self.root, label=job.label)
            train(job.model_cfg, job.train_cfg, [job.writer, job], device=dev, limits=self.limits,
                  data_root=job.options["data_root"], download=job.options["download"])
        except BaseException as e:  # one job's failure must never take the manager or other jobs down
            expected = isinstance(e, (LimitError, ValueError)) or type(e).__name__ == "DatasetUnavailable"
            if not expected:
                log.exception("job %s failed", job.id)
            if job.state in ACTIVE:  # the messages of expected errors are written for users already
                job.state, job.message = "failed", str(e)[:800] if expected else f"{type(e).__name__}: {str(e)[:500]}"
        finally:
            if job.state in ACTIVE:  # train() returned without on_end: never leave a job "running"
                job.state = "failed"
            with self._lock:
                self._running.discard(job)
                if gpu is not None:
                    self._free_gpus.append(gpu)
                self._evict()
                self._schedule()

    def _evict(self) -> None:
        """Bound memory: older finished jobs read their history from disk, the oldest are forgotten."""
        done = [j for j in self._jobs.values() if j.done and j not in self._running]
        for job in done[: max(0, len(done) - self.keep_history)]:
            job.release_history()
        for job in done[: max(0, len(done) - self.keep_finished)]:
            del self._jobs[job.id]
