"""A small queue that runs the analyses in the background, one at a time, shared by every session.

Until the analyses become kinds of the JobManager's jobs (resnet_core/jobs, issue 10), this is
their background job: `submit(key, fn)` queues `fn(progress, should_stop)` once per key (a second
submit of the same key returns the task already there), one worker thread runs them in order, and
pages poll `Task.snapshot()`. A finished task keeps its result for later views.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Work = Callable[[Callable[[float], None], Callable[[], bool]], Any]
MAX_KEPT = 64  # finished tasks kept for later views; the oldest go first


@dataclass
class Task:
    key: str
    fn: Work
    state: str = "queued"  # queued, running, done, failed, stopped
    progress: float = 0.0
    result: Any = None
    error: str = ""
    submitted: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return self.state in ("done", "failed", "stopped")

    def snapshot(self) -> dict[str, Any]:
        return {"key": self.key, "state": self.state, "progress": self.progress, "error": self.error}


class TaskQueue:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="why-tasks", daemon=True)
        self._thread.start()

    def submit(self, key: str, fn: Work) -> Task:
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and task.state not in ("failed", "stopped"):
                return task
            task = Task(key, fn)
            self._tasks[key] = task
            self._order = [k for k in self._order if k != key] + [key]
            self._forget()
            self._wake.notify()
            return task

    def get(self, key: str) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def place(self, key: str) -> int:
        """1 for the next to run, 2 after it, …; 0 when not waiting."""
        with self._lock:
            waiting = [k for k in self._order if self._tasks[k].state == "queued"]
        return waiting.index(key) + 1 if key in waiting else 0

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for t in self._tasks.values():
                t.stop()
            self._wake.notify()

    def _forget(self) -> None:
        done = [k for k in self._order if self._tasks[k].done]
        for k in done[: max(0, len(done) - MAX_KEPT)]:
            self._order.remove(k)
            del self._tasks[k]

    def _next(self) -> Task | None:
        with self._lock:
            while not self._closed:
                for k in self._order:
                    if self._tasks[k].state == "queued":
                        self._tasks[k].state = "running"
                        return self._tasks[k]
                self._wake.wait()
            return None

    def _work(self) -> None:
        while (task := self._next()) is not None:
            def progress(f: float, task: Task = task) -> None:
                task.progress = max(0.0, min(1.0, float(f)))

            try:
                task.result = task.fn(progress, task._stop.is_set)
                task.progress, task.state = 1.0, "done"
            except InterruptedError:
                task.state = "stopped"
            except Exception as e:  # shown on the page in one line; the worker carries on
                task.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                task.state = "failed"
                traceback.print_exc()
