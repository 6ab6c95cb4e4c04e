"""Recordings: real run records shipped with the app, and the player that replays them at any speed.

A recording is a folder, `recordings/<name>/`, holding one or more ordinary run records (as the
recorder writes them, read back by runs.load_run with all its checks) and a `recording.json`
saying what it is: title, machine, date, settings, the command that made it
(bench/make_recordings.py remakes each one).

The player is arithmetic on the records' own clocks. Every metrics row carries `seconds`, the
training time of its run when it was logged. A run starts on the recording's timeline at its
offset: 0 for the first run and for twins (trained in lockstep, one clock), and for runs that
trained one after another (the degradation experiment) the sum of the durations before it.
Playing at `speed` x for `elapsed` wall seconds reaches recorded time elapsed * speed; what
is visible of a run is every row logged by then, and its gradients up to the step reached.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import runs

INFO_FILE = "recording.json"
MAX_INFO_BYTES = 64 << 10
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
# The speeds a page offers: a factor, or "fit": the whole recording in FIT_S wall seconds.
SPEEDS = ("1x", "10x", "40x", "100x", "fit")
FIT_S = 30.0


def root() -> Path:
    """Where recordings live: RESNET_RECORDINGS_DIR, else the repository's recordings/ folder."""
    env = os.environ.get("RESNET_RECORDINGS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "recordings"


def machine() -> str:
    """This machine in words, for a recording's label: '2-core AMD EPYC (AVX2, no AVX-512)'."""
    cpu, isa = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
        if "avx2" in flags:
            isa = " (AVX2, AVX-512)" if "avx512f" in flags else " (AVX2, no AVX-512)"
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}{isa}"


@dataclass
class Recording:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # recording.json as read
    runs: list[runs.RunRecord] = field(default_factory=list)  # in timeline order
    offsets: list[float] = field(default_factory=list)  # each run's start on the recording's timeline, s
    damaged: str | None = None  # what is wrong; None for a sound recording

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def title(self) -> str:
        return str(self.info.get("title") or self.name)

    @property
    def made_on(self) -> str:
        """'made on <machine>, <date>': what every view of it says."""
        when = str(self.info.get("made_at", ""))[:10] or "an unknown date"
        return f"made on {self.info.get('machine') or 'an unknown machine'}, {when}"

    @property
    def durations(self) -> list[float]:
        return [run_duration(r) for r in self.runs]

    @property
    def duration_s(self) -> float:
        """Recorded seconds from the first run's start to the last run's end."""
        return max((o + d for o, d in zip(self.offsets, self.durations, strict=True)), default=0.0)

    def settings_text(self) -> str:
        s = self.info.get("settings") or {}
        return ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in s.items())


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "/".join(map(str, v))
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def run_duration(rec: runs.RunRecord) -> float:
    """Training seconds of a record: its last row's clock."""
    m = rec.metrics
    if m is None or not len(m):
        return 0.0
    s = m["seconds"].to_numpy(float)
    s = s[[math.isfinite(x) for x in s]]
    return float(s.max()) if len(s) else 0.0


def load_recording(path: str | os.PathLike) -> Recording:
    """The recording in `path`, every record read by runs.load_run; never raises (see `damaged`)."""
    rec = Recording(Path(path))
    try:
        raw = (rec.path / INFO_FILE).read_bytes()
        if len(raw) > MAX_INFO_BYTES:
            raise ValueError(f"{INFO_FILE} is larger than {MAX_INFO_BYTES:,} bytes")
        info = json.loads(raw)
        if not isinstance(info, dict) or not isinstance(info.get("runs"), list) or not info["runs"]:
            raise ValueError(f"{INFO_FILE} lists no runs")
        rec.info = info
    except (OSError, ValueError, RecursionError) as e:
        rec.damaged = f"{INFO_FILE}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
        return rec
    loaded = []
    for name in info["runs"]:
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            rec.damaged = f"{INFO_FILE} names a run that is not a folder name: {str(name)[:60]!r}"
            return rec
        r = runs.load_run(rec.path / name)
        if r.damaged:
            rec.damaged = f"{name}: {r.damaged}"
            return rec
        if r.status != "finished":
            rec.damaged = f"{name}: the run is {r.status}, not finished"
            return rec
        loaded.append(r)
    loaded.sort(key=lambda r: (str(r.meta.get("started_at", "")), not (r.model and r.model.skip)))
    rec.runs, rec.offsets = loaded, timeline(loaded)
    return rec


def timeline(records: list[runs.RunRecord]) -> list[float]:
    """Each run's offset: twins share their partner's; other runs follow one another end to end."""
    offsets: list[float] = []
    by_name: dict[str, float] = {}
    end = 0.0
    for r in records:
        partner = r.meta.get("twin")
        if partner in by_name:
            offsets.append(by_name[partner])
        else:
            offsets.append(end)
        by_name[r.name] = offsets[-1]
        end = max(end, offsets[-1] + run_duration(r))
    return offsets


def list_recordings(where: str | os.PathLike | None = None) -> list[str]:
    """Names of the recordings in `where` (default root()), sorted."""
    base = Path(where) if where is not None else root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / INFO_FILE).is_file()
                  and set(p.name) <= set(NAME_CHARS))


# ---------------------------------------------------------------- the player


def factor(speed: str, duration_s: float) -> float:
    """Recorded seconds per wall second at `speed` ('10x', or 'fit': the whole recording in FIT_S s)."""
    if speed == "fit":
        return max(1.0, duration_s / FIT_S)
    if speed.endswith("x"):
        try:
            value = float(speed[:-1])
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return value
    raise ValueError(f"speed {speed!r} is not one of {', '.join(SPEEDS)}")


def position(elapsed_s: float, speed: str, duration_s: float) -> float:
    """Recorded seconds reached after `elapsed_s` wall seconds of playing, capped at the end."""
    return min(duration_s, max(0.0, elapsed_s) * factor(speed, duration_s))


def wall_seconds(speed: str, duration_s: float) -> float:
    """How long the whole recording takes to play at `speed`."""
    return duration_s / factor(speed, duration_s)


def step_at(rec: runs.RunRecord, t: float) -> int:
    """The last step a run had logged `t` training seconds into it (0 before its first row)."""
    m = rec.metrics
    if m is None or not len(m):
        return 0
    seen = m[m["seconds"] <= t + 1e-9]
    return int(seen["step"].max()) if len(seen) else 0


def visible_steps(recording: Recording, at_s: float) -> list[int]:
    """For each run, the last step logged by recorded time `at_s` on the recording's timeline."""
    return [step_at(r, at_s - o) for r, o in zip(recording.runs, recording.offsets, strict=True)]


def rows_until(rec: runs.RunRecord, t: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, grads) of a run as they stood `t` training seconds into it."""
    metrics = rec.metrics[rec.metrics["seconds"] <= t + 1e-9].reset_index(drop=True)
    step = int(metrics["step"].max()) if len(metrics) else 0
    grads = rec.grads[rec.grads["step"] <= step].reset_index(drop=True) if len(metrics) else rec.grads.iloc[:0]
    return metrics, grads


def visible(recording: Recording, at_s: float) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Every run's (metrics, grads) at recorded time `at_s`."""
    return [rows_until(r, at_s - o) for r, o in zip(recording.runs, recording.offsets, strict=True)]


def fmt_clock(seconds: float) -> str:
    m, s = divmod(int(round(max(0.0, seconds))), 60)
    return f"{m}:{s:02d}"


def advance(at_s: float, last_tick: float | None, now: float, speed: str, duration_s: float,
            max_gap_s: float = 30.0) -> float:
    """The recorded time reached from `at_s` after the wall seconds since `last_tick`, at `speed`.

    A gap longer than `max_gap_s` (the tab slept) plays nothing: coming back resumes where the
    class left it rather than jumping ahead by the time away (a page switch clears the tick too).
    """
    dt = 0.0 if last_tick is None or not 0 <= now - last_tick <= max_gap_s else now - last_tick
    return min(duration_s, max(0.0, at_s) + dt * factor(speed, duration_s))


def speed_label(speed: str, duration_s: float) -> str:
    """'40x: 20 min in 30 s', as the speed menu says it."""
    from .speed import fmt_duration

    whole = f"{fmt_duration(duration_s)} in {fmt_duration(wall_seconds(speed, duration_s))}"
    return f"the whole run in {FIT_S:.0f} s ({whole})" if speed == "fit" else f"{speed}: {whole}"


def states(recording: Recording, at_s: float) -> list[tuple[str, int]]:
    """Each run's (state, step) at recorded time `at_s`: queued before its start, running, then finished."""
    out = []
    for o, d, step in zip(recording.offsets, recording.durations, visible_steps(recording, at_s),
                             strict=True):
        out.append(("finished" if at_s >= o + d else "running" if at_s >= o else "queued", step))
    return out
