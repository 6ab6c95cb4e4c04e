"""The messages between the job manager (in the server) and the place a job trains (a backend).

Every backend speaks this protocol, so the manager cannot tell them apart. A message is bytes:

    4 bytes little-endian: n, the length of the header
    n bytes: the header, JSON: {"kind": ..., <fields>, "blobs": [length, ...]}
    the blobs, back to back: raw float32 gradient values, safetensors weights

Nothing is pickled: configs travel as their JSON dicts (ModelConfig.to_dict, TrainConfig.to_dict),
rows as JSON numbers (NaN allowed: both ends are Python), tensors as raw bytes. The job's start
arguments (`job_spec`) are one JSON string too.

Worker -> manager (`lane` is 0, or 0/1 for twins trained in lockstep):

    hello      {pid, host, node}                     the worker is up (sent before anything else)
    started    {lane, layers, blocks, device, params, steps}
    log, eval  {lane, row}                           a metrics row as loop.py emits it
    grads      {lane, step, sizes} + one blob        float32 values, kinds in runs.KINDS order
    weights    {lane, which} + one blob              safetensors bytes; which: "initial" or "final"
    heartbeat  {}                                    at least every HEARTBEAT_S while alive
    end        {lane, result}                        TrainResult's fields
    error      {message, expected}                   training raised; expected: written for users
    bye        {}                                    nothing more will come

Manager -> worker: pause {}, resume {}, stop {reason}.

A backend's `start(spec)` returns a `Worker` handle (below): the Ray actor idiom, whose methods
are the protocol, and a caller that polls.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..config import ModelConfig, TrainConfig, from_dict
from ..limits import Limits
from ..loop import TrainResult
from ..runs import KINDS

HEARTBEAT_S = 1.0  # a worker says it is alive at least this often, paused or not
_HEAD = struct.Struct("<I")
MAX_HEADER = 1 << 20


class ProtocolError(ValueError):
    """Bytes that are not a message of this protocol."""


class WorkerLost(RuntimeError):
    """The worker is gone before its run ended; the message says how, for the user."""


@dataclass
class Message:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    blobs: list[bytes] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


def encode(kind: str, blobs: Sequence[bytes] = (), **values: Any) -> bytes:
    header = json.dumps({"kind": kind, **values, "blobs": [len(b) for b in blobs]}).encode()
    return b"".join([_HEAD.pack(len(header)), header, *blobs])


def decode(data: bytes) -> Message:
    if len(data) < _HEAD.size:
        raise ProtocolError("a message shorter than its header length")
    (n,) = _HEAD.unpack_from(data)
    if n > MAX_HEADER or _HEAD.size + n > len(data):
        raise ProtocolError(f"a message header of {n} bytes in {len(data)} bytes")
    try:
        header = json.loads(data[_HEAD.size:_HEAD.size + n])
    except ValueError:
        raise ProtocolError("a message header that is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise ProtocolError("a message header without a kind")
    sizes = header.pop("blobs", [])
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise ProtocolError("a message header whose blob lengths are not counts")
    at, blobs = _HEAD.size + n, []
    for size in sizes:
        blobs.append(bytes(data[at:at + size]))
        at += size
    if at != len(data):
        raise ProtocolError(f"a message of {len(data)} bytes whose parts add up to {at}")
    return Message(header.pop("kind"), header, blobs)


# ---------------------------------------------------------------- the payloads


def grads_message(lane: int, step: int, values: dict[str, Any]) -> bytes:
    parts = [np.asarray(values[k], np.float32).ravel() for k in KINDS]
    return encode("grads", [b"".join(p.tobytes() for p in parts)], lane=lane, step=int(step),
                  sizes={k: len(p) for k, p in zip(KINDS, parts, strict=True)})


def grads_values(msg: Message) -> dict[str, np.ndarray]:
    """The per-kind arrays of a grads message, as TrainingProbe.read() gave them."""
    flat = np.frombuffer(msg.blobs[0], np.float32)
    sizes = msg["sizes"]
    if sum(sizes.get(k, 0) for k in KINDS) != len(flat):
        raise ProtocolError("a grads message whose sizes do not match its values")
    out, at = {}, 0
    for k in KINDS:
        out[k] = flat[at:at + sizes[k]]
        at += sizes[k]
    return out


def result_fields(result: TrainResult) -> dict[str, Any]:
    return asdict(result)


def result_from(values: dict[str, Any]) -> TrainResult:
    known = {f.name for f in fields(TrainResult)}
    kwargs = {k: (math.nan if v is None else v) for k, v in values.items() if k in known}
    return TrainResult(**kwargs)


def job_spec(models: Sequence[ModelConfig], train_cfg: TrainConfig, *, twins: bool, device: str | None,
             limits: Limits, data_root: str | None, download: bool, threads: int,
             weights: Sequence[Sequence[str]] = (), fault: list[dict[str, Any]] | None = None) -> str:
    """A job's start arguments as one JSON string: what the worker needs and nothing a user typed
    beyond the configs the server validated. `weights`: per net, which weights its record keeps
    ("initial", "final"), so that the worker sends only those."""
    return json.dumps({"models": [m.to_dict() for m in models], "train": train_cfg.to_dict(), "twins": twins,
                       "device": device, "limits": asdict(limits), "data_root": data_root,
                       "download": download, "threads": threads, "fault": fault,
                       "weights": [list(w) for w in weights] or [["final"]] * len(models)})


@dataclass
class Spec:
    models: list[ModelConfig]
    train: TrainConfig
    twins: bool
    device: str | None
    limits: Limits
    data_root: str | None
    download: bool
    threads: int
    fault: list[dict[str, Any]] | None  # test-only (faults.py)
    weights: list[list[str]]  # per net, the weights its record keeps


def read_spec(text: str) -> Spec:
    d = json.loads(text)
    return Spec([from_dict(m) for m in d["models"]], TrainConfig.from_dict(d["train"]), bool(d["twins"]),
                d["device"], Limits(**d["limits"]), d["data_root"], bool(d["download"]), int(d["threads"]),
                d.get("fault"), d.get("weights") or [["final"]] * len(d["models"]))


# ---------------------------------------------------------------- what every backend provides


class Worker:
    """The handle on one job's worker that a backend's `start(spec)` returns.

    The manager's relay thread is its only caller: it polls `since`, sends controls, and kills
    a worker that went silent. A backend subclasses this (or provides the same methods).
    """

    backend = ""  # "thread", "process" or "ray": written into each record's config.json

    def since(self, timeout: float) -> list[Message]:
        """Messages that arrived since the last call, waiting up to `timeout` s for the first.

        Raises WorkerLost (its message for the user: "the training process was killed ...")
        once the worker is gone and every message it sent has been returned."""
        raise NotImplementedError

    def pause(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def stop(self, reason: str = "") -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """End the worker now, whatever it is doing (a hung one, or at shutdown)."""
        raise NotImplementedError

    def where(self) -> dict[str, Any]:
        """{"backend", "host", "node", "pid"} of the place it runs, once known (after hello)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the handle holds (pipes, a process's zombie); the worker has ended."""


class Backend:
    """Starts workers. One per JobManager; `close()` at the manager's shutdown."""

    name = ""

    def start(self, spec: str, name: str) -> Worker:
        """A worker training the job of `spec` (job_spec's JSON); `name` is for threads and logs."""
        raise NotImplementedError

    def devices(self) -> list[str]:
        """The devices a job sent to these workers can train on: this machine's (resnet_core.device)."""
        from ..device import available

        return available()

    def close(self) -> None:
        pass
