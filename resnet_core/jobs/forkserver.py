"""A warm process that forks the job workers: started once per server, it imports torch and the
training code (warm.py), then forks a worker for each job in milliseconds.

The server and the forkserver talk over a SOCK_SEQPACKET socket pair, in protocol.py's messages
(nothing pickled): `ready` {} once warm; `fork` {id, spec} with the worker's end of a fresh pipe passed as a file
descriptor (SCM_RIGHTS), answered by `forked` {id, pid}; `exited` {pid, code} when a worker
ends (code as os.waitstatus_to_exitcode: -9 for SIGKILL). The forkserver is single-threaded, so
forking it is safe; it exits when the server's end of the socket closes, and each worker exits
when its own pipe closes, so nothing trains on after the server is gone. Ctrl-C in the terminal
reaches the server alone: the forkserver and its workers ignore SIGINT and end with the server.

(multiprocessing's own forkserver re-imports the parent's __main__ in every child, and under
`streamlit run` that is the page script: hence this one.)
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .protocol import decode, encode

_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds resnet_core


class Forkserver:
    """The server's side: start it once, then `fork(spec)` -> (pid, Connection)."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))}
        self.proc = subprocess.Popen([sys.executable, "-m", "resnet_core.jobs.forkserver", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._lock = threading.Lock()  # one request or read at a time; no thread of its own
        self._next = 0
        self._forked: dict[int, int] = {}  # request id -> pid
        self._exits: dict[int, int] = {}  # pid -> exit code
        self._closed = False
        self._ready = False  # it has imported what workers need (warm.py) and forks at once

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Whether it is warm, waiting up to `timeout` s for it (benches and tests that time a start)."""
        with self._lock:
            self._read(lambda: self._ready, timeout)
            return self._ready

    def _read(self, until: Any, timeout: float) -> None:
        """Read replies (under the lock) until `until()` holds, the forkserver is gone or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not until() and not self._closed:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                    return
                data = self._sock.recv(1 << 16)
            except (OSError, ValueError):  # closed meanwhile (close() at exit): select refuses fd -1
                data = b""
            if not data:  # the forkserver is gone: no more workers, and their exits are unknown
                self._closed = True
                return
            msg = decode(data)
            if msg.kind == "ready":
                self._ready = True
            elif msg.kind == "forked":
                self._forked[int(msg["id"])] = int(msg["pid"])
            elif msg.kind == "exited":
                self._exits[int(msg["pid"])] = int(msg["code"])

    def fork(self, spec: str, timeout: float = 120.0) -> tuple[int, Connection]:
        """A new worker running `spec`: its pid and the server's end of its pipe."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._next += 1
            rid = self._next
            try:
                socket.send_fds(self._sock, [encode("fork", id=rid, spec=spec)], [theirs.fileno()])
            finally:
                theirs.close()
            self._read(lambda: rid in self._forked, timeout)  # the first fork waits for the warm-up
            if rid not in self._forked:
                ours.close()
                raise RuntimeError("the forkserver is gone: no worker can start" if self._closed else
                                   f"the forkserver did not start a worker in {timeout:g} s")
            pid = self._forked.pop(rid)
        return pid, Connection(ours.detach())

    def exitcode(self, pid: int, timeout: float) -> int | None:
        """The worker's exit code (negative: the signal that ended it); None if not ended within `timeout`."""
        with self._lock:
            self._read(lambda: pid in self._exits, timeout)
            return self._exits.pop(pid, None)

    def close(self) -> None:
        self._closed = True  # a reader in another thread stops at its next look
        self._sock.close()  # the forkserver sees EOF and exits
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


_shared: Forkserver | None = None
_shared_lock = threading.Lock()


def shared() -> Forkserver:
    """This process's forkserver, started on first use (and again if it died): every JobManager of
    a process shares it, as the tests' many managers do."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.proc.poll() is not None or _shared._closed:
            _shared = Forkserver()
            atexit.register(_shared.close)
        return _shared


# ---------------------------------------------------------------- in the forkserver process


def serve(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers: see the module docstring
    sock = socket.socket(fileno=fd)
    from . import warm  # noqa: F401 - the point of this process

    sock.send(encode("ready"))
    while True:
        ready, _, _ = select.select([sock], [], [], 0.2)
        _reap(sock)
        if not ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
        except OSError:
            data, fds = b"", []
        if not data:
            return  # the server is gone
        msg = decode(data)
        pid = os.fork()
        if pid == 0:  # the worker
            sock.close()
            code = 0
            try:
                from .process_backend import main

                main(msg["spec"], Connection(fds[0]))
            except BaseException:  # noqa: BLE001 - the exit code tells the server; the trace goes to its log
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(fds[0])
        sock.send(encode("forked", id=msg["id"], pid=pid))


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            sock.send(encode("exited", pid=pid, code=os.waitstatus_to_exitcode(status)))
        except OSError:
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]))
