"""The Ray backend: each job trains in a Ray actor on an existing Ray cluster, placed by Ray.

Selected by RESNET_RAY_ADDRESS (the app and the CLI alike) or `train --ray ADDRESS`; nothing
else imports this module, so Ray need not be installed otherwise. The server connects to the
cluster as a Ray driver and keeps the queue, the limits and the run records; an actor trains
and keeps the messages it made until the server's relay has read them.

`JobActor` is the protocol as actor methods: `run(run_id, spec)` trains (its returned handle
resolves when the run is over), `since(run_id, cursor, wait)` returns the messages after
`cursor` as one bytes value (each a protocol.encode message, length-prefixed: the configs, rows
and tensors the product made, never a user's object), and `pause`, `resume`, `stop` set the
loop's controls. It is a threaded actor, so those calls are served while `run` trains. A job
asks for 1 CPU, or 1 GPU where its device is cuda (or auto on a cluster with GPUs); twins train
in lockstep in one actor, as in every backend (worker.run).

Warm actors: a fresh actor is a fresh process that imports torch and the training code (warm.py),
2-3 s on an idle machine and far more on a busy one. So actors are kept: the backend starts
RESNET_RAY_WARM_ACTORS (default 1) at once, and an actor whose job ended cleanly goes back to a
pool for the next job, up to that many (idle ones are dropped after RESNET_RAY_IDLE_S, default
600). An idle actor holds its CPU (or GPU) on the cluster. An actor that ran a test fault, or
whose job was killed, is never reused. Actors have `max_restarts=0` and belong to the server's
driver: if the server dies, Ray ends them, so nothing trains on for nobody.

Faults: an actor whose node is removed or dies fails its job ("the Ray node running this job was
lost ..."); Ray tells the server once its health checks have missed the node (about 15-30 s
with Ray's defaults). The record keeps every row streamed before.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError
except ModuleNotFoundError as e:  # pragma: no cover - exercised by a test without Ray
    raise ImportError("Ray is not installed here, but RESNET_RAY_ADDRESS or --ray asks for it: "
                      "pip install -r requirements-ray.txt") from e

from ..limits import env_float
from . import protocol
from .protocol import Message, WorkerLost, decode, encode

log = logging.getLogger(__name__)
ADDRESS_ENV = "RESNET_RAY_ADDRESS"
NAMESPACE = "resnet-explainer"
_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds resnet_core
_FRAME = struct.Struct("<I")
RPC_GRACE_S = 30.0  # beyond a since() call's own wait: a busy cluster may take this long to answer
LINGER_S = 0.25  # since() answers at most this long after its first new message (pages refresh every 0.5-1 s)
PLACE_TIMEOUT_S = 600.0  # a job no node has room for fails after this long (RESNET_RAY_PLACE_TIMEOUT_S)


def frame(messages: list[bytes]) -> bytes:
    return b"".join(_FRAME.pack(len(m)) + m for m in messages)


def unframe(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        (n,) = _FRAME.unpack_from(data, at)
        out.append(data[at + _FRAME.size:at + _FRAME.size + n])
        at += _FRAME.size + n
    return out


# ---------------------------------------------------------------- on a Ray node


class JobActor:
    """One job's worker on a Ray node, reused job after job; see the module docstring."""

    def __init__(self) -> None:
        t = time.monotonic()
        from . import warm  # noqa: F401 - torch, the training code, mnist-5k: once per actor

        self.warm_s = time.monotonic() - t
        self._cond = threading.Condition()
        self._run_id = ""
        self._base = 0  # the cursor of self._out[0]
        self._out: list[bytes] = []
        self._controls: Any = None

    def hello(self) -> dict[str, Any]:
        """Where this actor runs and what its start cost: it is up (and warm) once this answers."""
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "host": socket.gethostname(), "node": ctx.get_node_id(),
                "ip": ray.util.get_node_ip_address(), "warm_s": self.warm_s}

    def run(self, run_id: str, spec: str) -> bool:
        """Train `spec`'s job (protocol.job_spec's JSON), keeping its messages for since()."""
        from . import worker

        controls = worker.Controls()
        with self._cond:
            self._run_id, self._base, self._out, self._controls = run_id, 0, [], controls
        send = worker.Sender(self._put)
        send(encode("hello", **{k: v for k, v in self.hello().items() if k != "warm_s"}))
        try:
            parsed = protocol.read_spec(spec)
            import torch

            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
            torch.set_num_threads(max(1, int(cpus)))
            if parsed.fault:
                from . import faults

                faults.install(parsed.fault)
        except Exception as e:  # noqa: BLE001 - a spec this actor cannot run: the job fails saying why
            send(encode("error", message=f"{type(e).__name__}: {str(e)[:500]}", expected=False))
            send(encode("bye"))
            return False
        worker.run(parsed, send, controls)
        return True

    def _put(self, data: bytes) -> None:
        with self._cond:
            self._out.append(data)
            self._cond.notify_all()

    def since(self, run_id: str, cursor: int, wait: float) -> bytes:
        """Run `run_id`'s messages from `cursor` on (those before it are dropped: the caller has
        them), waiting up to `wait` s for one to come."""
        with self._cond:
            if run_id != self._run_id:
                return b""
            del self._out[: max(0, cursor - self._base)]
            self._base = max(self._base, cursor)
            t = time.monotonic()
            self._cond.wait_for(lambda: self._out or run_id != self._run_id, min(wait, 5.0))
            linger = min(t + wait - time.monotonic(), LINGER_S) if self._out else 0.0
        # Then gather what comes in the rest of `wait` (LINGER_S at most) into one answer, not a round
        # trip per message: each call costs this process CPU that training would use. Asleep, not
        # waiting on the condition, so the training thread's messages wake nobody meanwhile.
        if linger > 0:
            time.sleep(linger)
        with self._cond:
            return frame(self._out) if run_id == self._run_id else b""

    def _control(self, run_id: str, msg: Message) -> None:
        with self._cond:
            controls = self._controls if run_id == self._run_id else None
        if controls is not None:
            controls.handle(msg)

    def pause(self, run_id: str) -> None:
        self._control(run_id, Message("pause"))

    def resume(self, run_id: str) -> None:
        self._control(run_id, Message("resume"))

    def stop(self, run_id: str, reason: str = "") -> None:
        self._control(run_id, Message("stop", {"reason": reason}))


# ---------------------------------------------------------------- in the server


_connected = ""  # the address this process's driver has joined


def connect(address: str) -> None:
    """Join the cluster at `address` as this process's driver (once; again for another address).

    ConnectionError, in words for the user, when no cluster answers there."""
    global _connected
    if ray.is_initialized():
        if address in (_connected, "auto", ray.get_runtime_context().gcs_address):
            return
        ray.shutdown()
    try:
        # Workers add _ROOT to their sys.path: the project where this one lies, on every machine (a
        # worker machine has it at the same path, or on its PYTHONPATH: README, "Ray")
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False,
                 job_config=ray.job_config.JobConfig(_py_driver_sys_path=[_ROOT]))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConnectionError(f"could not join the Ray cluster at {address!r} ({ADDRESS_ENV} or --ray): "
                              f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
    _connected = address


def device_kind(train_device: str) -> str:
    """"gpu" if a job on `train_device` asks Ray for a GPU, else "cpu"."""
    if train_device == "cuda":
        return "gpu"
    if train_device == "auto" and ray.cluster_resources().get("GPU", 0) > 0:
        return "gpu"
    return "cpu"


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(JobActor)
    return _ACTOR_CLASS


@dataclass
class _Slot:
    actor: Any
    kind: str
    ready: Any  # the ObjectRef of its hello(): resolved once the actor is up and warm
    since: float = field(default_factory=time.monotonic)


class _Pool:
    """Actors of this server: idle ones, warm or still starting, handed to the jobs that wait."""

    def __init__(self, keep: int, idle_s: float, cpus: float):
        self.keep, self.idle_s, self.cpus = keep, idle_s, cpus
        self._idle: list[_Slot] = []
        self._waiting: dict[str, set[int]] = {"cpu": set(), "gpu": set()}
        self._lock = threading.Lock()
        self._closed = False

    def new(self, kind: str) -> _Slot:
        actor = _actor_class().options(
            num_cpus=self.cpus, num_gpus=1 if kind == "gpu" else 0, max_restarts=0, max_task_retries=0,
            max_concurrency=8).remote()
        return _Slot(actor, kind, actor.hello.remote())

    def prewarm(self, n: int) -> None:
        with self._lock:
            self._idle += [self.new("cpu") for _ in range(n)]

    def claim(self, kind: str, who: int) -> tuple[Any, dict[str, Any]] | None:
        """A warm idle actor of `kind` and its hello() for worker `who`, or None (not yet: one is
        starting for it). RuntimeError when an actor could not start (it says why)."""
        with self._lock:
            self._expire()
            self._waiting[kind].add(who)
            mine = [s for s in self._idle if s.kind == kind]
            ready, _ = ray.wait([s.ready for s in mine], num_returns=len(mine), timeout=0) if mine else ([], [])
            for slot in [s for s in mine if s.ready in ready]:
                self._idle.remove(slot)
                try:
                    info = ray.get(slot.ready, timeout=5)
                    ray.get(slot.actor.hello.remote(), timeout=5)  # still alive (its node may be gone)
                except RayActorError as e:
                    if "creation task" in str(e):  # it could not start: every next one would fail alike
                        raise RuntimeError(_creation_error(e)) from None
                    continue
                except (GetTimeoutError, RayError):
                    ray.kill(slot.actor, no_restart=True)
                    continue
                self._waiting[kind].discard(who)
                self._trim(kind, ready)
                return slot.actor, info
            starting = len(mine) - len(ready)
            for _ in range(len(self._waiting[kind]) - starting):  # one starting actor per waiting job
                self._idle.append(self.new(kind))
            return None

    def unwait(self, who: int) -> None:
        with self._lock:
            for waiting in self._waiting.values():
                waiting.discard(who)

    def release(self, actor: Any, kind: str, info: dict[str, Any]) -> None:
        """An actor whose job ended cleanly: kept warm for the next job, or ended if enough are."""
        with self._lock:
            idle = sum(s.kind == kind for s in self._idle)
            if self._closed or idle >= max(self.keep, len(self._waiting[kind])):
                ray.kill(actor, no_restart=True)
                return
            ref = ray.put(info)  # resolved at once: it is warm
            self._idle.insert(0, _Slot(actor, kind, ref))

    def _trim(self, kind: str, ready: list[Any]) -> None:
        """Actors still starting that no job waits for, beyond the warm ones kept: ended (each would
        hold a CPU or GPU once placed)."""
        mine = [s for s in self._idle if s.kind == kind]
        extra = len(mine) - max(self.keep, len(self._waiting[kind]))
        for slot in [s for s in reversed(mine) if s.ready not in ready][:max(0, extra)]:
            self._idle.remove(slot)
            ray.kill(slot.actor, no_restart=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for slot in [s for s in self._idle if now - s.since > self.idle_s]:
            self._idle.remove(slot)
            ray.kill(slot.actor, no_restart=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for slot in self._idle:
                ray.kill(slot.actor, no_restart=True)
            self._idle = []


def _creation_error(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    return (f"a Ray actor could not start on the cluster: {last[:300]} (each node needs this project and its "
            "requirements importable: README, \"Ray\")")


def _lost(e: BaseException, where: dict[str, Any]) -> str:
    """What an actor's death says, in words for the user."""
    node, ip = str(where.get("node") or "?"), where.get("ip") or "?"
    text = str(e)
    if "node has died" in text or "node was terminated" in text or not _node_alive(node):
        return (f"the Ray node running this job was lost (node {node[:12]} at {ip}); the job failed, the server "
                "and the other jobs go on")
    if "creation task" in text:
        return _creation_error(e)
    detail = next((ln.strip() for ln in text.splitlines() if "exit" in ln.lower() or "killed" in ln.lower()), "")
    return (f"the Ray actor training this job died (node {node[:12]} at {ip})" + (f": {detail[:300]}" if detail else "")
            + "; other jobs are not affected")


def _node_alive(node: str) -> bool:
    try:
        return any(n["NodeID"] == node and n["Alive"] for n in ray.nodes())
    except Exception:  # noqa: BLE001 - a cluster that cannot say: assume alive, the actor's error stands
        return True


class RayWorker(protocol.Worker):
    """The server's handle on one job's actor (the relay polls it like any Worker)."""

    backend = "ray"

    def __init__(self, pool: _Pool, spec: str, kind: str, lanes: int, steps: int, faulty: bool):
        self.pool, self.spec, self.kind, self.lanes, self.steps, self.faulty = pool, spec, kind, lanes, steps, faulty
        self.run_id = os.urandom(8).hex()
        self.actor: Any = None
        self._info: dict[str, Any] = {}
        self._cursor = 0
        self._run: Any = None  # the ObjectRef of actor.run(): resolved when the run is over
        self._where: dict[str, Any] = {"backend": self.backend}
        self._asked: list[tuple[str, tuple[Any, ...]]] = []  # controls sent before an actor took the job
        self._placing_since = time.monotonic()
        self._killed = False
        self._place_timeout = env_float("RESNET_RAY_PLACE_TIMEOUT_S", PLACE_TIMEOUT_S, zero_ok=True)

    # ------------------------------------------------------------ before an actor has the job

    def _place(self, timeout: float) -> list[Message] | None:
        """Messages to return while no actor has the job yet; None once one has it."""
        try:
            got = self.pool.claim(self.kind, id(self))
        except RuntimeError as e:
            self.pool.unwait(id(self))
            raise WorkerLost(str(e)) from None
        if got is None:
            if any(kind == "stop" for kind, _ in self._asked):
                self.pool.unwait(id(self))
                return [*self._ends("stopped", "stopped before a Ray node took it"), Message("bye")]
            waited = time.monotonic() - self._placing_since
            if waited > self._place_timeout:
                self.pool.unwait(id(self))
                raise WorkerLost(f"no Ray node had room for this job (1 {self.kind.upper()}) for {waited:.0f} s "
                                 "(RESNET_RAY_PLACE_TIMEOUT_S)")
            time.sleep(min(timeout, 0.5))
            return [Message("heartbeat")]  # waiting for Ray to place it is not silence
        self.actor, self._info = got
        self._where.update({k: self._info.get(k) for k in ("host", "node", "ip", "pid")})
        self._run = self.actor.run.remote(self.run_id, self.spec)
        for kind, args in self._asked:
            getattr(self.actor, kind).remote(self.run_id, *args)
        return None

    def _ends(self, status: str, message: str) -> list[Message]:
        result = protocol.result_fields(protocol.TrainResult(status, message, 0, self.steps, ""))
        return [Message("end", {"lane": lane, "result": result}) for lane in range(self.lanes)]

    # ------------------------------------------------------------ the protocol

    def since(self, timeout: float) -> list[Message]:
        if self.actor is None:
            waiting = self._place(timeout)
            if waiting is not None:
                return waiting
        try:
            wait = max(timeout, LINGER_S)  # at most one round trip per LINGER_S while it trains
            data = ray.get(self.actor.since.remote(self.run_id, self._cursor, wait), timeout=wait + RPC_GRACE_S)
        except GetTimeoutError:
            return []
        except ActorUnavailableError:  # not answering for now; Ray says soon whether it is dead
            time.sleep(min(timeout, 0.5))
            return []
        except RayActorError as e:
            raise WorkerLost("the Ray actor of this job was ended" if self._killed else _lost(e, self._where)) from None
        out = [decode(m) for m in unframe(data)]
        self._cursor += len(out)
        for msg in out:
            if msg.kind == "hello":
                self._where.update({k: msg.fields.get(k) for k in ("host", "node", "ip", "pid")})
        return out

    def _call(self, kind: str, *args: Any) -> None:
        if self.actor is None:
            self._asked.append((kind, args))
        else:
            getattr(self.actor, kind).remote(self.run_id, *args)  # not waited for: the relay polls on

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def stop(self, reason: str = "") -> None:
        self._call("stop", reason)

    def kill(self) -> None:
        self._killed = True
        self.pool.unwait(id(self))
        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)

    def where(self) -> dict[str, Any]:
        return dict(self._where)

    def close(self) -> None:
        self.pool.unwait(id(self))
        if self.actor is None or self._killed:
            return
        try:
            clean = bool(ray.get(self._run, timeout=10))
        except (GetTimeoutError, RayError):
            clean = False
        if clean and not self.faulty:
            self.pool.release(self.actor, self.kind, self._info)
        else:
            ray.kill(self.actor, no_restart=True)
        self.actor = None


class RayBackend(protocol.Backend):
    name = "ray"

    def __init__(self, address: str | None = None, warm: int | None = None):
        self.address = address or os.environ.get(ADDRESS_ENV, "")
        if not self.address:
            raise ValueError(f"the Ray backend needs a cluster address: set {ADDRESS_ENV} or pass --ray ADDRESS")
        connect(self.address)
        warm = warm if warm is not None else int(env_float("RESNET_RAY_WARM_ACTORS", 1, zero_ok=True))
        self.pool = _Pool(keep=warm, idle_s=env_float("RESNET_RAY_IDLE_S", 600.0, zero_ok=True), cpus=1)
        self.pool.prewarm(warm)

    def devices(self) -> list[str]:
        """The cluster's, not the server's: cuda where any node offers Ray a GPU, and the CPU. A server
        without a GPU can then send cuda jobs to a cluster that has them."""
        return (["cuda"] if ray.cluster_resources().get("GPU", 0) > 0 else []) + ["cpu"]

    def start(self, spec: str, name: str) -> RayWorker:
        parsed = protocol.read_spec(spec)
        kind = device_kind(parsed.train.device)
        # The server's own GPUs mean nothing on a Ray node: Ray gives the actor its GPU (CUDA_VISIBLE_DEVICES)
        # and the job trains on "cuda" there, or on the CPU.
        spec = protocol.job_spec(parsed.models, parsed.train, twins=parsed.twins, device=None, limits=parsed.limits,
                                 data_root=parsed.data_root, download=parsed.download, threads=1,
                                 fault=parsed.fault)
        return RayWorker(self.pool, spec, kind, lanes=2 if parsed.twins else 1, steps=parsed.train.steps,
                         faulty=bool(parsed.fault))

    def close(self) -> None:
        self.pool.close()
