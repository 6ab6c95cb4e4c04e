"""The process backend, the default: each job trains in a worker process of its own.

Workers are forked by a warm forkserver (forkserver.py) that has imported torch and the
training code once and read mnist-5k; the backend starts it when the JobManager is made, so a
job's process starts in milliseconds, not in the 2-3 s of torch's import. A worker gets its
spec as a JSON string and its end of a pipe, over which it sends protocol messages with
`send_bytes` (never pickle) and reads controls in a thread of its own.

A worker dies alone: a SIGKILL (the out-of-memory killer's way), an abort in native code or a
segfault ends that process, and the relay reads how from its exit status. A worker whose server
is gone sees its pipe close (EOF) and exits at once: its parent is the forkserver, not the
server, so the pipe is what it watches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from . import forkserver, protocol
from .forkserver import Forkserver
from .protocol import Message, WorkerLost, decode, encode


def death(exitcode: int | None) -> str:
    """What a worker's exit status says, in words for the user."""
    if exitcode is None:
        return "the training process stopped answering"
    if exitcode >= 0:
        return f"the training process exited (code {exitcode}) before its run ended"
    sig = -exitcode
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    if sig == signal.SIGKILL:
        return "the training process was killed (SIGKILL), probably out of memory"
    if sig == signal.SIGABRT:
        return ("the training process aborted (SIGABRT), a crash in native code (oneDNN's heap corruption is "
                "one known cause); other jobs are not affected")
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        return f"the training process crashed ({name}), a crash in native code; other jobs are not affected"
    return f"the training process was ended by {name}"


class ProcessWorker(protocol.Worker):
    backend = "process"

    def __init__(self, server: Forkserver, spec: str):
        self.server = server
        self.pid, self.conn = server.fork(spec)  # the worker holds the only other end of conn
        self._where: dict[str, Any] = {"backend": self.backend, "pid": self.pid}
        self._send_lock = threading.Lock()
        self._exitcode: int | None = None

    def since(self, timeout: float) -> list[Message]:
        out: list[Message] = []
        try:
            ready = self.conn.poll(timeout)
            while ready:
                out.append(decode(self.conn.recv_bytes()))
                ready = self.conn.poll(0)
        except (EOFError, OSError):
            if not out:
                raise WorkerLost(death(self._wait(2.0))) from None
        for msg in out:
            if msg.kind == "hello":
                self._where.update({k: msg.fields.get(k) for k in ("host", "node", "pid")})
        return out

    def _send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self.conn.send_bytes(data)
        except OSError:  # it is gone; since() says how
            pass

    def pause(self) -> None:
        self._send(encode("pause"))

    def resume(self) -> None:
        self._send(encode("resume"))

    def stop(self, reason: str = "") -> None:
        self._send(encode("stop", reason=reason))

    def _wait(self, timeout: float) -> int | None:
        if self._exitcode is None:
            self._exitcode = self.server.exitcode(self.pid, timeout)
        return self._exitcode

    def kill(self) -> None:
        if self._exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait(5.0)

    def where(self) -> dict[str, Any]:
        return dict(self._where)

    def close(self) -> None:
        if self._wait(5.0) is None:
            self.kill()
        self.conn.close()


class ProcessBackend(protocol.Backend):
    name = "process"

    def __init__(self) -> None:
        forkserver.shared()  # warming up from now on (about 3 s, in its own process), if not already

    def start(self, spec: str, name: str) -> ProcessWorker:
        return ProcessWorker(forkserver.shared(), spec)


# ---------------------------------------------------------------- in the worker process


def main(spec: str, conn: Any) -> None:
    """A worker process: hello, then train the spec's job, reading controls in a thread."""
    from . import worker

    controls = worker.Controls()

    def read() -> None:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                os._exit(0)  # the server is gone (its end of the pipe closed): nobody to train for
            controls.handle(decode(data))

    threading.Thread(target=read, name="controls", daemon=True).start()
    send = worker.Sender(conn.send_bytes)
    send(encode("hello", **{k: v for k, v in worker.where("process").items() if k != "backend"}))
    parsed = protocol.read_spec(spec)
    import torch

    torch.set_num_threads(max(1, parsed.threads))
    if parsed.fault:
        from . import faults

        faults.install(parsed.fault)
    worker.run(parsed, send, controls)
    conn.close()
