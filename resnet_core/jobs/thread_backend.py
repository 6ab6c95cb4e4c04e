"""The thread backend: a job trains in a thread of the server process, as v1 did.

Kept while the benches compare it with the worker processes (bench/bench_train.py,
bench/bench_first_heatmap.py); RESNET_JOB_BACKEND=thread selects it. A crash in native code
here ends the server and every job on it: that is why processes are the default. It speaks the
same protocol as the others (messages encoded and decoded, through a queue), so the manager
cannot tell the backends apart.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from . import protocol, worker
from .protocol import Message, WorkerLost, decode, encode


class ThreadWorker(protocol.Worker):
    backend = "thread"

    def __init__(self, spec: str, name: str):
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._controls = worker.Controls()
        self._where = worker.where(self.backend)
        self._thread = threading.Thread(target=self._main, args=(spec,), name=name, daemon=True)
        self._thread.start()

    def _main(self, spec: str) -> None:
        self._inbox.put(encode("hello", **{k: v for k, v in self._where.items() if k != "backend"}))
        worker.run(protocol.read_spec(spec), self._inbox.put, self._controls)

    def since(self, timeout: float) -> list[Message]:
        out = []
        try:
            out.append(decode(self._inbox.get(timeout=timeout)))
            while True:
                out.append(decode(self._inbox.get_nowait()))
        except queue.Empty:
            pass
        if not out and not self._thread.is_alive():
            raise WorkerLost("the training thread ended without a word")
        return out

    def pause(self) -> None:
        self._controls.handle(Message("pause"))

    def resume(self) -> None:
        self._controls.handle(Message("resume"))

    def stop(self, reason: str = "") -> None:
        self._controls.handle(Message("stop", {"reason": reason}))

    def kill(self) -> None:
        self.stop("killed")  # a thread cannot be killed: it is asked to stop, and left to end

    def where(self) -> dict[str, Any]:
        return dict(self._where)

    def close(self) -> None:
        self._thread.join(5)


class ThreadBackend(protocol.Backend):
    name = "thread"

    def start(self, spec: str, name: str) -> ThreadWorker:
        return ThreadWorker(spec, name)
