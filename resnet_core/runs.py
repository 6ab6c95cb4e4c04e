"""Run records: a folder per run, written as training goes and validated when read back.

    <root>/<run>/config.json             model and training configs, environment, status, final figures
    <root>/<run>/metrics-00001.parquet   (step, split, loss, accuracy, lr, seconds, samples_per_s)
    <root>/<run>/grads-00001.parquet     (step, layer, kind, value), long format
    <root>/<run>/model.safetensors       the trained weights; model_initial.safetensors: at step 0 (weights.py)

Parquet cannot be appended to, so the writer adds a small part file every ~2 s (written to a
temporary name, then renamed: a part is whole or absent), and a killed process loses at most
those seconds. Many parts read slowly, so every COMPACT_EVERY parts, and at the end, they are
merged into `metrics.parquet` / `grads.parquet`, whose metadata says which parts it already
holds; a crash between the merge and the deletion of the parts therefore never duplicates rows.

Reading never unpickles and never raises: the schema of every file is checked before its rows
are read, the config goes through `config.from_dict`, and anything wrong is reported in
`RunRecord.damaged`. The writer lives in recorder.py, zip export and import in runzip.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config import ConfigError, ModelConfig, TrainConfig, from_dict

FORMAT, VERSION = "resnet-explainer-run", 1
STATUSES = ("running", "finished", "stopped", "failed", "diverged", "interrupted")
LAYER_KINDS = ("weight_grad", "weight_norm", "update_ratio")  # one value per weighted layer
# one value per block; shortcut_share (the shortcut's share of the gradient at the block's fork) is
# new in records of issue 12: older records lack it and still load
BLOCK_KINDS = ("act_grad", "shortcut_share")
KINDS = LAYER_KINDS + BLOCK_KINDS  # the order in which a logged step's values are concatenated
SPLITS = ("train", "test")
METRICS_SCHEMA = pa.schema([("step", pa.int64()), ("split", pa.string()), ("loss", pa.float64()),
                            ("accuracy", pa.float64()), ("lr", pa.float64()), ("seconds", pa.float64()),
                            ("samples_per_s", pa.float64())])
GRADS_SCHEMA = pa.schema([("step", pa.int64()), ("layer", pa.string()), ("kind", pa.string()),
                          ("value", pa.float64())])
SCHEMAS = {"metrics": METRICS_SCHEMA, "grads": GRADS_SCHEMA}
CONFIG_KEYS = {"format", "version", "label", "model", "train", "device", "versions", "started_at",
               "updated_at", "status", "message", "final", "layers", "blocks", "pid", "host",
               "twin",  # twin: the folder name of the record trained in lockstep with this one (twins.py)
               "where"}  # where: {"backend", "host", "node", "pid", "device"} of the process that trained it
MAX_CONFIG_BYTES = 1 << 20
COMPACT_EVERY = 64
PART_RE = re.compile(r"^(metrics|grads)-(\d{5,9})\.parquet$")
STALE_S = 120.0  # a "running" record from another host whose heartbeat is older is interrupted

WEIGHTS_FILES = {"final": "model.safetensors", "initial": "model_initial.safetensors"}

_LIVE: set[str] = set()  # run folders a writer in this process has open: their "running" is true


def grads_layout(layers: list[str], blocks: list[str]) -> tuple[list[str], list[str]]:
    """(layer, kind) of each value of a logged step concatenated in KINDS order."""
    names = list(layers) * len(LAYER_KINDS) + list(blocks) * len(BLOCK_KINDS)
    kinds = [k for k in LAYER_KINDS for _ in layers] + [k for k in BLOCK_KINDS for _ in blocks]
    return names, kinds


def default_root() -> Path:
    return Path(os.environ.get("RESNET_RUNS_DIR") or "runs")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def dump_config(meta: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN is not JSON; callers store a missing figure as null
    return json.dumps(meta, indent=1, allow_nan=False).encode()


# ---------------------------------------------------------------- reading


@dataclass
class RunRecord:
    path: Path
    meta: dict[str, Any]  # config.json as read (empty when unreadable)
    model: ModelConfig | None = None
    train: TrainConfig | None = None
    metrics: pd.DataFrame | None = None  # None when loaded without tables
    grads: pd.DataFrame | None = None
    damaged: str | None = None  # what is wrong, for the reader; None for a sound record

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return self.meta.get("status", "damaged") if not self.damaged else "damaged"

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.path.name)

    @property
    def has_weights(self) -> bool:
        """Whether the record holds trained weights (older records do not); weights.load checks them."""
        return (self.path / WEIGHTS_FILES["final"]).is_file()

    @property
    def has_initial_weights(self) -> bool:
        return (self.path / WEIGHTS_FILES["initial"]).is_file()


def check_config(meta: Any) -> tuple[ModelConfig, TrainConfig]:
    """Validate a parsed config.json; ValueError says the first thing wrong."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"config.json is not a {FORMAT} record")
    if meta.get("version") != VERSION:
        raise ValueError(f"config.json has version {meta.get('version')!r}; this app reads {VERSION}")
    unknown = set(meta) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"config.json has unknown keys: {', '.join(sorted(unknown)[:5])}")
    if meta.get("status") not in STATUSES:
        raise ValueError(f"config.json status {meta.get('status')!r} is not one of {', '.join(STATUSES)}")
    for key, kind in (("label", str), ("message", str), ("started_at", str), ("device", str),
                      ("final", dict), ("versions", dict), ("layers", list), ("blocks", list), ("where", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"config.json {key} is not a {kind.__name__}")
    for key in ("layers", "blocks"):
        if not all(isinstance(n, str) for n in meta.get(key, [])):
            raise ValueError(f"config.json {key} must be a list of names")
    if "twin" in meta and not _is_folder_name(meta["twin"]):  # a name beside this record, never a path
        raise ValueError("config.json twin is not a run folder name")
    try:
        return from_dict(meta.get("model")), TrainConfig.from_dict(meta.get("train"))
    except (ConfigError, ValueError, TypeError) as e:
        raise ValueError(f"config.json: {e}") from None


def _is_folder_name(name: Any) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}", name) is not None


def check_table(kind: str, table: pa.Table) -> None:
    """Column names, types and the allowed kinds/splits; ValueError naming what is wrong."""
    if not table.schema.equals(SCHEMAS[kind], check_metadata=False):
        raise ValueError(f"{kind} columns are {_describe(table.schema)}; expected {_describe(SCHEMAS[kind])}")
    column, allowed = ("kind", KINDS) if kind == "grads" else ("split", SPLITS)
    values = set(table.column(column).unique().to_pylist())
    if not values <= set(allowed):
        raise ValueError(f"{kind} has {column} values {sorted(map(str, values - set(allowed)))[:3]}")


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}:{f.type}" for f in schema)[:300]


def read_parquet(source: Any, kind: str) -> pa.Table:
    """One parquet file (a path or a buffer), schema checked from the footer before any row is read."""
    pf = pq.ParquetFile(source)
    if not pf.schema_arrow.equals(SCHEMAS[kind], check_metadata=False):
        raise ValueError(f"{kind} columns are {_describe(pf.schema_arrow)}; expected {_describe(SCHEMAS[kind])}")
    table = pf.read()
    check_table(kind, table)
    return table


def _covers(path: Path) -> int:
    meta = pq.read_schema(path).metadata or {}
    return int(meta.get(b"covers", b"0"))


def table_files(run_dir: Path, kind: str) -> list[Path]:
    """The merged file (if any) then the parts it does not already hold, in order."""
    main = run_dir / f"{kind}.parquet"
    covered = _covers(main) if main.exists() else 0
    parts = sorted((int(m.group(2)), p) for p in run_dir.iterdir()
                   if (m := PART_RE.match(p.name)) and m.group(1) == kind)
    return ([main] if main.exists() else []) + [p for i, p in parts if i > covered]


def read_table(run_dir: Path, kind: str) -> pd.DataFrame:
    for attempt in range(3):
        try:
            tables = [read_parquet(p, kind) for p in table_files(run_dir, kind)]
            break
        except FileNotFoundError:  # a live writer merged its parts between our listing and reading
            if attempt == 2:
                raise
    table = pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()
    return table.to_pandas(ignore_metadata=True)  # ignore_metadata: no pandas reconstruction hooks


def load_run(path: str | os.PathLike, tables: bool = True) -> RunRecord:
    """The record in `path`; never raises. Without `tables` only the parquet footers are checked."""
    path = Path(path)
    rec = RunRecord(path=path, meta={})
    try:
        raw = (path / "config.json").read_bytes()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"config.json is {len(raw):,} bytes, more than {MAX_CONFIG_BYTES:,}")
        rec.meta = json.loads(raw)
        rec.model, rec.train = check_config(rec.meta)
    except (OSError, ValueError, RecursionError) as e:
        rec.meta = rec.meta if isinstance(rec.meta, dict) else {}
        rec.damaged = _reason("config.json", e)
        return rec
    for kind in SCHEMAS:
        try:
            if tables:
                setattr(rec, kind, read_table(path, kind))
            else:
                _check_footers(path, kind)
        except (OSError, ValueError, pa.ArrowException) as e:
            rec.damaged = _reason(kind, e)
    _mark_interrupted(rec)
    return rec


def _check_footers(path: Path, kind: str) -> None:
    for attempt in range(3):
        try:
            for p in table_files(path, kind):
                if not pq.read_schema(p).equals(SCHEMAS[kind], check_metadata=False):
                    raise ValueError(f"{p.name} does not have the {kind} columns")
            return
        except FileNotFoundError:  # parts merged while we looked: list again
            if attempt == 2:
                raise


def _reason(what: str, e: BaseException) -> str:
    text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    return f"{what}: {text}"


def list_runs(root: str | os.PathLike | None = None) -> list[RunRecord]:
    """Every record under `root` (footers checked, rows not read), newest first, damaged ones flagged."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    records = [load_run(p, tables=False) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(records, key=lambda r: str(r.meta.get("started_at", "")), reverse=True)


# ---------------------------------------------------------------- interrupted runs


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphan(path: Path, meta: dict[str, Any]) -> bool:
    """A "running" record that no live writer owns: its process died or stopped beating."""
    if meta.get("status") != "running" or str(path.resolve()) in _LIVE:
        return False
    if meta.get("host") == socket.gethostname():
        return meta.get("pid") == os.getpid() or not _pid_alive(meta.get("pid"))
    try:
        beat = datetime.fromisoformat(str(meta.get("updated_at"))).timestamp()
    except ValueError:
        return True
    return time.time() - beat > STALE_S


def _mark_interrupted(rec: RunRecord) -> None:
    if not is_orphan(rec.path, rec.meta):
        return
    rec.meta["status"] = "interrupted"
    step = rec.meta.get("final", {}).get("step")
    rec.meta["message"] = ("the process training this run ended without finishing"
                           + (f"; the record holds what was saved up to step {step}" if step else ""))
    with contextlib.suppress(OSError):  # best effort: a read-only folder is still reported right in memory
        atomic_write(rec.path / "config.json", dump_config(rec.meta))


# ---------------------------------------------------------------- writing helpers


def write_part(run_dir: Path, kind: str, index: int, columns: dict[str, np.ndarray | list]) -> None:
    table = pa.table(columns, schema=SCHEMAS[kind])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write(run_dir / f"{kind}-{index:05d}.parquet", sink.getvalue().to_pybytes())


def compact(run_dir: Path, kind: str) -> None:
    """Merge the merged file and its outstanding parts into a new merged file, then drop the parts."""
    files = table_files(run_dir, kind)
    parts = [p for p in files if PART_RE.match(p.name)]
    if not parts:
        return
    table = pa.concat_tables([read_parquet(p, kind) for p in files])
    covers = max(int(PART_RE.match(p.name).group(2)) for p in parts)
    table = table.replace_schema_metadata({"covers": str(covers)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write(run_dir / f"{kind}.parquet", sink.getvalue().to_pybytes())
    for p in parts:  # safe to lose: the merged file's "covers" already hides them
        p.unlink(missing_ok=True)
