"""The training side of a job, the same in every backend: run a job's spec, stream its messages.

`run(spec, send, controls)` trains (one net, or twins in lockstep) with a `Lane` per net as the
loop's callback: each callback becomes a message (protocol.py) handed to `send`. `Controls`
holds the flags the manager's pause/resume/stop messages set; the loop asks them every step
(Lane.should_stop) and, while paused, waits on them, sending a heartbeat every HEARTBEAT_S, so a
paused job is not taken for a hung one. Heartbeats come from the training thread itself: a
training step that hangs sends nothing, and the manager kills the worker after its timeout.

A test-only fault (protocol spec "fault", from the server's RESNET_TEST_WORKER_FAULT; see
faults.py) is installed in worker processes only, where it can take down nothing but its job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from . import protocol
from .protocol import HEARTBEAT_S, Spec, encode

log = logging.getLogger(__name__)
Send = Callable[[bytes], None]


class Controls:
    """Pause/resume/stop flags set by the manager's messages, read by the training loop."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.running = threading.Event()  # cleared while paused
        self.running.set()
        self.reason = ""

    def handle(self, msg: protocol.Message) -> None:
        if msg.kind == "pause":
            self.running.clear()
        elif msg.kind == "resume":
            self.running.set()
        elif msg.kind == "stop":
            self.reason = str(msg.fields.get("reason", ""))
            self.stopped.set()
            self.running.set()  # wake a paused loop so it sees the stop at once


class Sender:
    """`send` with the time of the last message, so heartbeats go only when nothing else did."""

    def __init__(self, send: Send):
        self._send, self._lock, self.last = send, threading.Lock(), 0.0

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self._send(data)
            self.last = time.monotonic()

    def heartbeat(self) -> None:
        if time.monotonic() - self.last >= HEARTBEAT_S:
            self(encode("heartbeat"))


class Lane:
    """The loop's callback for one net: turns what it reports into messages."""

    def __init__(self, lane: int, send: Sender, controls: Controls, weights: tuple[str, ...] = ("final",)):
        self.lane, self.send, self.controls, self.weights = lane, send, controls, weights

    def on_start(self, info: dict[str, Any]) -> None:
        self.send(encode("started", lane=self.lane, layers=list(info["layers"]), blocks=list(info["blocks"]),
                         device=str(info["device"]), params=int(info.get("params", 0)),
                         steps=int(info.get("steps", 0))))

    def on_log(self, row: dict[str, Any]) -> None:
        self.send(encode("log", lane=self.lane, row=row))

    def on_eval(self, row: dict[str, Any]) -> None:
        self.send(encode("eval", lane=self.lane, row=row))

    def on_grads(self, step: int, values: dict[str, Any]) -> None:
        self.send(protocol.grads_message(self.lane, step, values))

    def on_weights(self, which: str, tensors: dict[str, Any]) -> None:
        if which in self.weights:  # the record keeps these: the server said so in the spec
            from ..weights import to_bytes

            self.send(encode("weights", [to_bytes(tensors)], lane=self.lane, which=which))

    def on_end(self, result: Any) -> None:
        self.send(encode("end", lane=self.lane, result=protocol.result_fields(result)))

    def should_stop(self) -> bool:
        c = self.controls
        self.send.heartbeat()
        while not c.stopped.is_set() and not c.running.wait(0.25):
            self.send.heartbeat()  # paused: alive, and awake often enough to see a stop at once
        return c.stopped.is_set()

    @property
    def stop_reason(self) -> str:
        return self.controls.reason


def where(backend: str) -> dict[str, Any]:
    host = socket.gethostname()
    return {"backend": backend, "host": host, "node": host, "pid": os.getpid()}


def run(spec: Spec, send: Send, controls: Controls) -> None:
    """Train `spec`'s job, sending every message, `error` if training raised, and `bye` last."""
    sender = send if isinstance(send, Sender) else Sender(send)
    lanes = [Lane(i, sender, controls, tuple(spec.weights[i])) for i in range(2 if spec.twins else 1)]
    where_ = {"device": spec.device, "limits": spec.limits, "data_root": spec.data_root,
              "download": spec.download, "progress": lambda _msg: sender.heartbeat()}
    try:
        if spec.twins:
            from ..twins import train_twins

            train_twins(spec.models[0], spec.train, [lanes[0]], [lanes[1]], **where_)
        else:
            from ..train import train

            train(spec.models[0], spec.train, [lanes[0]], **where_)
    except BaseException as e:  # noqa: BLE001 - whatever it was, the manager hears of it
        from ..limits import LimitError

        expected = isinstance(e, (LimitError, ValueError)) or type(e).__name__ == "DatasetUnavailable"
        if not expected:
            log.exception("a job failed")
        message = str(e)[:800] if expected else f"{type(e).__name__}: {str(e)[:500]}"
        sender(encode("error", message=message, expected=expected))
    sender(encode("bye"))
