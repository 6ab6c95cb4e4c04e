"""One background training run as pages see it: its state, its history in memory, its controls.

The JobManager (manager.py) creates jobs, queues them and has a backend train each; the relay
thread of a job feeds the messages its worker streams to the job's callbacks below (on_start,
on_log, ...: the same as train()'s) and to its RunWriter. pause/resume/stop set flags here that
the relay sends to the worker. A twin run is two Jobs that point at each other (`partner`):
every control acts on both.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from ..config import ModelConfig, TrainConfig
from ..loop import TrainResult
from ..recorder import RunWriter
from ..runs import GRADS_SCHEMA, KINDS, METRICS_SCHEMA, grads_layout, load_run

if TYPE_CHECKING:
    from .protocol import Worker

STATES = ("queued", "running", "paused", "finished", "stopped", "failed", "diverged", "interrupted")
ACTIVE = ("queued", "running", "paused")


class Queue(Protocol):
    """What a job asks of the manager that holds it (manager.py implements it; this module needs no more)."""

    idle_s: float

    def queue_place(self, job: Job) -> int | None: ...

    def _dequeue(self, job: Job) -> None: ...


class Job:
    """One training run; also the train() callback that feeds its in-memory history and flags."""

    def __init__(self, manager: Queue, owner: str, label: str, model_cfg: ModelConfig,
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
        self.thread: threading.Thread | None = None  # the relay thread, in the server (manager.py)
        self.worker: Worker | None = None  # the backend's handle on where it trains
        self.seconds = 0.0  # training time at the latest row
        self.writer: RunWriter | None = None
        self._rows: list[dict[str, Any]] = []
        self._grads: list[tuple[int, np.ndarray]] = []  # (step, values in kinds-then-layers order)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._stop_reason = ""
        self._released = False  # history dropped from memory, read from the record
        self.group = ""  # id shared by the jobs of one submit_group request
        self.partner: Job | None = None  # the twin trained in lockstep with this job, if any
        self.lead = True  # False for the plain twin: its partner's worker trains it and it never queues
        self.where: dict[str, Any] = {}  # backend, host, node, pid, device: where it trains, once it does

    @property
    def twin(self) -> str:
        """The id of the twin trained in lockstep with this job; "" for a job on its own."""
        return self.partner.id if self.partner is not None else ""

    def _pair(self) -> tuple[Job, ...]:
        return (self,) if self.partner is None else (self, self.partner)

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
        names, kinds = grads_layout(self.layers, self.blocks)
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
                "dataset": self.train_cfg.dataset, "submitted_at": self.submitted_at, "twin": self.twin,
                "family": "residual" if self.model_cfg.skip else "plain"}

    def touch(self) -> None:
        for job in self._pair():  # twins live and die together: looking at one keeps both
            job.last_poll = time.monotonic()

    def pause(self) -> None:
        for job in self._pair():
            with job._lock:  # state changes race with the training thread's on_end
                if job.state == "running":
                    job._running.clear()
                    job.state = "paused"

    def resume(self) -> None:
        for job in self._pair():
            with job._lock:
                if job.state == "paused":
                    job.state = "running"
                job._running.set()

    def stop(self, reason: str = "") -> None:
        for job in self._pair():
            job._stop_reason = reason
            job._stop.set()
            job._running.set()
        self.manager._dequeue(self)

    @property
    def done(self) -> bool:
        return self.state not in ACTIVE

    # ------------------------------------------------------------ what its worker streams (the relay calls these)

    def on_start(self, info: dict[str, Any]) -> None:
        self.layers, self.blocks, self.device = list(info["layers"]), list(info["blocks"]), str(info["device"])
        if self.writer is not None and self.writer.started:  # the folder exists from now on
            self.run_dir = str(self.writer.run_dir)

    def on_log(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
        self.step, self.train_loss, self.seconds = row["step"], row["loss"], row["seconds"]
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

    def on_end(self, result: TrainResult) -> None:
        self.step = result.step
        if math.isfinite(result.samples_per_s):
            self.samples_per_s = result.samples_per_s
        with self._lock:
            self.message, self.state = result.message, result.status

    @property
    def stop_reason(self) -> str:
        """Why it was asked to stop (the worker's loop adds it to the run's message, and so to its record)."""
        return self._stop_reason

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        """Asked to stop, and its worker has not ended it yet (pause and resume take effect at once)."""
        return self._stop.is_set() and not self.done

    def _idle(self) -> bool:
        if time.monotonic() - self.last_poll <= self.manager.idle_s:
            return False
        self._stop_reason = self._stop_reason or f"nobody looked at it for {self.manager.idle_s:g} s"
        return True
