"""Background training jobs shared by every browser session of one server: the JobManager.

One `JobManager` per process (the page holds it with st.cache_resource; this module knows
nothing of streamlit). It keeps the queue, the limits, the owners and the run records; where a
job trains is its backend's business (protocol.py): a worker process of its own by default
(process_backend.py), a thread of this process (thread_backend.py, RESNET_JOB_BACKEND=thread).
For each running job a relay thread (`job-<id>`) polls its worker's messages and feeds them to
the Job (its in-memory rows, which pages read with `job.since(cursor)` and `job.snapshot()`)
and to its RunWriter, so the record is written here, as the rows arrive: a worker needs no
shared disk, and a worker that dies leaves a record of all it streamed, marked failed.

At most `max_running` jobs train at once; the rest wait in order and know their place. The
relay passes pause/resume/stop to the worker within a tenth of a second, and the worker acts on
them at its next step. A job nobody has polled for `idle_s` seconds is stopped, so a closed tab
never leaves a worker training for nobody. A worker that sends nothing (not even its heartbeat,
every second, paused or not) for `worker_timeout_s` (RESNET_WORKER_TIMEOUT_S, default 60) is
killed and its job failed.

Twin runs (`submit_twins`) are two jobs trained by one worker in lockstep (twins.py): they wait
in the queue as one entry, start together, and a pause, resume or stop of either acts on both.
A group (`submit_group`, e.g. the degradation experiment) is several jobs that count as one
request against the per-session queue limit, and train one after another like any others.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import device as devices
from ..config import ModelConfig, TrainConfig
from ..limits import LIMITS, LimitError, env_float
from ..recorder import RunWriter
from ..train import check_limits
from ..twins import check_twin_limits, link_records, twin_configs
from . import faults, protocol
from .job import ACTIVE, Job
from .protocol import TrainResult, WorkerLost

log = logging.getLogger(__name__)
BACKENDS = ("process", "thread", "ray")


def make_backend(name: str | None = None) -> protocol.Backend:
    """The backend called `name`, else RESNET_JOB_BACKEND's, else "ray" where RESNET_RAY_ADDRESS is set,
    else "process". Only the Ray backend imports Ray."""
    name = name or os.environ.get("RESNET_JOB_BACKEND", "") or ("ray" if os.environ.get("RESNET_RAY_ADDRESS") else "")
    name = name or "process"
    if name == "process":
        from .process_backend import ProcessBackend

        return ProcessBackend()
    if name == "thread":
        from .thread_backend import ThreadBackend

        return ThreadBackend()
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend()
    raise ValueError(f"job backend {name!r} is not one of {', '.join(BACKENDS)} (RESNET_JOB_BACKEND)")


def _timeout_from_env() -> float:
    return env_float("RESNET_WORKER_TIMEOUT_S", 60.0)


class JobManager:
    """Process-wide: submit, find, control and list jobs; see the module docstring."""

    def __init__(self, root: str | Path | None = None, limits: Any = LIMITS, max_running: int | None = None,
                 idle_s: float = 600.0, keep_finished: int = 100, keep_history: int = 8,
                 data_root: str | Path | None = None, backend: str | protocol.Backend | None = None,
                 worker_timeout_s: float | None = None):
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
        self.backend = backend if isinstance(backend, protocol.Backend) else make_backend(backend)
        self.worker_timeout_s = worker_timeout_s or _timeout_from_env()

    def check_device(self, name: str) -> None:
        """ValueError, naming what is allowed, for a device the backend's workers cannot train on: this
        machine's devices for threads and processes, the cluster's for Ray ("auto" always: the worker
        picks the best it has)."""
        devices.check(name, self.backend.devices(), "on the Ray cluster" if self.backend.name == "ray" else "here")

    def submit(self, model_cfg: ModelConfig, train_cfg: TrainConfig, owner: str = "local", label: str = "",
               data_root: str | None = None, download: bool = False) -> str:
        """A new job's id; LimitError/ConfigError/ValueError (refused, nothing started) say why not."""
        check_limits(model_cfg, train_cfg, self.limits)
        self.check_device(train_cfg.device)  # a device the workers lack is refused now, not later
        data_root = self._data_root(data_root)
        job = Job(self, owner, label, model_cfg, train_cfg, {"data_root": data_root, "download": download})
        self._enqueue([job], owner)
        return job.id

    def submit_twins(self, model_cfg: ModelConfig, train_cfg: TrainConfig, owner: str = "local",
                     labels: tuple[str, str] = ("", ""), data_root: str | None = None,
                     download: bool = False) -> tuple[str, str]:
        """(residual id, plain id) of `model_cfg`'s twins, trained in lockstep by one worker.

        They take one place in the queue and one training slot: one worker trains both.
        """
        check_twin_limits(model_cfg, train_cfg, self.limits)
        self.check_device(train_cfg.device)
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
            self.check_device(train_cfg.device)
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
        """Stop every job and wait (up to `timeout` s in all) for their relays to end; kill what is left."""
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
        for job in jobs:
            if job.thread is not None and job.thread.is_alive() and job.worker is not None:
                job.worker.kill()
                job.thread.join(2)
        self.backend.close()

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
            for j in pair:
                j.writer = RunWriter(j.model_cfg, j.train_cfg, root=self.root, label=j.label)
            if job.partner is not None:
                link_records(job.writer, job.partner.writer)
            import torch

            spec = protocol.job_spec([j.model_cfg for j in pair], job.train_cfg, twins=job.partner is not None,
                                     device=f"cuda:{gpu}" if gpu is not None else None, limits=self.limits,
                                     data_root=job.options["data_root"], download=job.options["download"],
                                     threads=torch.get_num_threads(), fault=faults.from_env(),
                                     weights=[_kept(j.writer) for j in pair])
            worker = self.backend.start(spec, name=f"job-{job.id}-worker")
            for j in pair:
                j.worker = worker
            _Relay(job, worker, self.worker_timeout_s).run()
        except BaseException as e:  # one job's failure must never take the manager or other jobs down
            log.exception("job %s failed", job.id)
            _fail(pair, f"{type(e).__name__}: {str(e)[:500]}")
        finally:
            for j in pair:
                if j.state in ACTIVE:  # the worker ended without its end message: never leave a job "running"
                    _fail([j], j.message or "the training process ended before its run did")
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


def _kept(writer: RunWriter) -> list[str]:
    """The weights `writer`'s record keeps (all, where the writer predates weights in records)."""
    keeps = getattr(writer, "keeps", None)
    return [w for w in ("initial", "final") if keeps is None or keeps(w)]


def _fail(jobs: Any, message: str) -> None:
    """Mark `jobs` failed with `message`; their records, if begun, keep every row streamed and say so."""
    for j in jobs:
        if j.state not in ACTIVE:
            continue
        result = TrainResult("failed", message, j.step, j.train_cfg.steps, j.device, train_loss=j.train_loss,
                             test_accuracy=j.test_accuracy, samples_per_s=j.samples_per_s, seconds=j.seconds)
        if j.writer is not None:
            try:
                j.writer.on_end(result)
            except Exception:  # noqa: BLE001 - the job fails whatever its disk says
                log.exception("job %s: its record could not be closed", j.id)
        j.on_end(result)


class _Relay:
    """The server's side of one running job: its worker's messages to the jobs and records, and
    the jobs' controls to its worker, until every net of it has ended."""

    def __init__(self, job: Job, worker: protocol.Worker, timeout_s: float):
        self.jobs, self.worker, self.timeout_s = job._pair(), worker, timeout_s
        self.ended = [False] * len(self.jobs)
        self.paused = self.stopped = False  # what the worker has been told
        self.started = False  # the first net has begun training

    def run(self) -> None:
        heard = time.monotonic()
        while True:
            self._controls()
            try:
                messages = self.worker.since(0.1)
            except WorkerLost as e:
                _fail(self.jobs, str(e))
                return
            now = time.monotonic()
            if messages:
                heard = now
            elif now - heard > self.timeout_s:
                self.worker.kill()
                _fail(self.jobs, f"the training process sent nothing for {self.timeout_s:g} s "
                                 "(RESNET_WORKER_TIMEOUT_S) and was killed")
                return
            for msg in messages:
                if self._handle(msg):
                    self.worker.close()
                    return

    def _controls(self) -> None:
        lead = self.jobs[0]
        # the idle rule applies from the first step on, as it did when the loop itself asked it
        idle = self.started and any(j._idle() for j in self.jobs)
        if not self.stopped and (lead._stop.is_set() or idle):
            self.stopped = True
            self.worker.stop("; ".join(dict.fromkeys(filter(None, (j.stop_reason for j in self.jobs)))))
            return
        paused = any(j.paused for j in self.jobs) and not self.stopped
        if paused != self.paused:
            self.paused = paused
            (self.worker.pause if paused else self.worker.resume)()

    def _handle(self, msg: protocol.Message) -> bool:
        """Pass one message on; True once nothing more is to come."""
        kind = msg.kind
        if kind in ("hello", "heartbeat"):
            if kind == "heartbeat":
                for j in self.jobs:
                    if j.writer is not None:
                        j.writer.heartbeat()
            return False
        if kind == "bye":
            return True
        if kind == "error":
            _fail([j for j, done in zip(self.jobs, self.ended, strict=True) if not done], msg["message"])
            return False
        lane = int(msg["lane"])
        job, writer = self.jobs[lane], self.jobs[lane].writer
        if kind == "started":
            if not self.started:  # the idle window opens when training does, not while its worker warmed up
                self.started = True
                job.touch()
            job.where = {**self.worker.where(), "device": msg["device"]}
            writer.meta["where"] = job.where
            info = {k: msg[k] for k in ("layers", "blocks", "device", "params", "steps")}
            for cb in (writer, job):
                cb.on_start(info)
        elif kind in ("log", "eval"):
            row = {k: (math.nan if v is None else v) for k, v in msg["row"].items()}
            for cb in (writer, job):
                getattr(cb, "on_" + kind)(row)
        elif kind == "grads":
            values = protocol.grads_values(msg)
            for cb in (writer, job):
                cb.on_grads(msg["step"], values)
        elif kind == "weights":
            try:  # checked against the record's config before anything is written (weights.py)
                writer.write_weights(msg["which"], msg.blobs[0])
            except ValueError:
                log.exception("job %s: its %s weights were not kept", job.id, msg["which"])
        elif kind == "end":
            result = protocol.result_from(msg["result"])
            self.ended[lane] = True
            for cb in (writer, job):
                cb.on_end(result)
        return False
