"""Background training jobs shared by every browser session of one server.

One `JobManager` per process (the page holds it with st.cache_resource; this module knows
nothing of streamlit). Each job trains in a daemon thread through train.train(), writing its
record with recorder.RunWriter and keeping its rows in memory, so a page asks only for what
is new (`job.since(cursor)`) and a cheap `job.snapshot()`. At most `max_running` jobs train at
once; the rest wait in order and know their place. A job checks its flags every step and,
while paused, waits on an Event with a timeout, so pause/resume/stop act within a step
(well under a second for the nets a class trains on a CPU). A job nobody has polled for
`idle_s` seconds is stopped, so a closed tab never leaves a thread training for nobody.

Twin runs (`submit_twins`) are two jobs trained by one thread in lockstep (twins.py): they wait
in the queue as one entry, start together, and a pause, resume or stop of either acts on both.
A group (`submit_group`, e.g. the degradation experiment) is several jobs that count as one
request against the per-session queue limit, and train one after another like any others.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from . import device as devices
from .config import ModelConfig, TrainConfig
from .job import ACTIVE, STATES, Job
from .limits import LIMITS, LimitError
from .recorder import RunWriter
from .train import check_limits, train
from .twins import check_twin_limits, link_records, train_twins, twin_configs

__all__ = ["ACTIVE", "STATES", "Job", "JobManager"]  # Job lives in job.py; pages import it from here
log = logging.getLogger(__name__)


class JobManager:
    """Process-wide: submit, find, control and list jobs; see the module docstring."""

    def __init__(self, root: str | Path | None = None, limits: Any = LIMITS, max_running: int | None = None,
                 idle_s: float = 600.0, keep_finished: int = 100, keep_history: int = 8,
                 data_root: str | Path | None = None):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.root, self.limits, self.idle_s, self.keep_finished = root, limits, idle_s, keep_finished
        self.keep_history = keep_history  # finished jobs whose rows stay in memory; older ones read from disk
        self.max_running = max_running or limits.max_running_jobs or max(1, gpus)
        # A server passes its data root: what users ask for must lie inside it, so nobody can make
        # the server read or download into a folder of their choosing. None: any (tests, scripts).
        self.data_root = Path(data_root).resolve() if data_root is not None else None
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
        data_root = self._data_root(data_root)
        job = Job(self, owner, label, model_cfg, train_cfg, {"data_root": data_root, "download": download})
        self._enqueue([job], owner)
        return job.id

    def submit_twins(self, model_cfg: ModelConfig, train_cfg: TrainConfig, owner: str = "local",
                     labels: tuple[str, str] = ("", ""), data_root: str | None = None,
                     download: bool = False) -> tuple[str, str]:
        """(residual id, plain id) of `model_cfg`'s twins, trained in lockstep by one thread.

        They take one place in the queue and one training slot: one thread trains both.
        """
        check_twin_limits(model_cfg, train_cfg, self.limits)
        devices.resolve(train_cfg.device)
        data_root = self._data_root(data_root)
        options = {"data_root": data_root, "download": download}
        lead, plain = (Job(self, owner, label, cfg, train_cfg, options)
                       for label, cfg in zip(labels, twin_configs(model_cfg), strict=True))
        lead.partner, plain.partner, plain.lead = plain, lead, False
        self._enqueue([lead], owner, also=[plain])
        return lead.id, plain.id

    def submit_group(self, requests: list[tuple[ModelConfig, TrainConfig, str]], owner: str = "local") -> list[str]:
        """Ids of jobs for (model, training, label) requests, queued together as one request.

        The whole group counts once against max_queued_per_session (an experiment is one click),
        and each of its jobs counts against max_queued_total (what the server holds).
        """
        if not requests:
            raise ValueError("a group needs at least one job")
        for model_cfg, train_cfg, _ in requests:
            check_limits(model_cfg, train_cfg, self.limits)
            devices.resolve(train_cfg.device)
        jobs = [Job(self, owner, label, m, t, {"data_root": None, "download": False}) for m, t, label in requests]
        for job in jobs:
            job.group = jobs[0].id
        self._enqueue(jobs, owner)
        return [j.id for j in jobs]

    def _enqueue(self, jobs: list[Job], owner: str, also: list[Job] = ()) -> None:
        """Queue `jobs` (one request) after the limits allow it; `also` are twins that never queue."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job manager is shut down")
            for job in [j for j in self._queue if j._idle()]:
                job.stop()
                self._mark_stopped(job, f"stopped while queued: {job._stop_reason}")
            if self._queue or len(self._running) + len(jobs) > self.max_running:  # some would wait
                mine = len({j.group or j.id for j in self._queue if j.owner == owner})  # a group is one request
                if mine >= self.limits.max_queued_per_session:
                    raise LimitError("max_queued_per_session", mine + 1, self.limits.max_queued_per_session,
                                     " queued requests")
                if len(self._queue) + len(jobs) > self.limits.max_queued_total:
                    raise LimitError("max_queued_total", len(self._queue) + len(jobs),
                                     self.limits.max_queued_total, " queued jobs")
            for job in [*jobs, *also]:
                self._jobs[job.id] = job
            self._queue.extend(jobs)
            self._schedule()

    def _data_root(self, asked: str | None) -> str | None:
        """`asked` if this manager allows it (ValueError if not); the server's root when none is asked."""
        if self.data_root is None:
            return asked
        if not asked:
            return str(self.data_root)
        path = Path(asked).expanduser().resolve()
        if path != self.data_root and self.data_root not in path.parents:
            # the path typed is not repeated: pages show this message as markdown
            raise ValueError(f"the data root given is outside this server's data folder {self.data_root} "
                             "(RESNET_DATA_DIR); datasets are read and downloaded only there")
        return str(path)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id) if isinstance(job_id, str) else None

    def jobs(self, owner: str | None = None) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_place(self, job: Job) -> int | None:
        """1 for the next job to start; None when not waiting. A plain twin waits in its partner's place."""
        with self._lock:
            for j in job._pair():
                if j in self._queue:
                    return self._queue.index(j) + 1
            return None

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
            for j in job._pair():
                if j in self._queue:
                    self._queue.remove(j)
                    self._mark_stopped(j, "stopped before it started")

    @staticmethod
    def _mark_stopped(job: Job, message: str) -> None:
        for j in job._pair():
            j.state, j.message = "stopped", message

    def _schedule(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_running and not self._closed:
                job = self._queue.pop(0)
                if job._idle():  # its page closed while it waited: never start it
                    self._mark_stopped(job, f"stopped while queued: {job._stop_reason}")
                    continue
                gpu = self._free_gpus.pop(0) if self._free_gpus and job.train_cfg.device in ("auto", "cuda") else None
                for j in job._pair():
                    j.state = "running"
                self._running.add(job)
                job.thread = threading.Thread(target=self._run, args=(job, gpu), name=f"job-{job.id}", daemon=True)
                job.thread.start()

    def _run(self, job: Job, gpu: int | None) -> None:
        pair = job._pair()
        try:
            dev = f"cuda:{gpu}" if gpu is not None else None
            for j in pair:
                j.writer = RunWriter(j.model_cfg, j.train_cfg, root=self.root, label=j.label)
            where = {"device": dev, "limits": self.limits, "data_root": job.options["data_root"],
                     "download": job.options["download"]}
            if job.partner is None:
                train(job.model_cfg, job.train_cfg, [job.writer, job], **where)
            else:
                link_records(job.writer, job.partner.writer)
                train_twins(job.model_cfg, job.train_cfg, [job.writer, job], [job.partner.writer, job.partner],
                            **where)
        except BaseException as e:  # one job's failure must never take the manager or other jobs down
            expected = isinstance(e, (LimitError, ValueError)) or type(e).__name__ == "DatasetUnavailable"
            if not expected:
                log.exception("job %s failed", job.id)
            for j in pair:
                if j.state in ACTIVE:  # the messages of expected errors are written for users already
                    j.state, j.message = "failed", str(e)[:800] if expected else f"{type(e).__name__}: {str(e)[:500]}"
        finally:
            for j in pair:
                if j.state in ACTIVE:  # train() returned without on_end: never leave a job "running"
                    j.state = "failed"
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
