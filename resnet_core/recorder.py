"""RunWriter: the training callback that writes a run record (format in runs.py) as training goes.

Rows are buffered in memory and written as a part file every `flush_s` seconds, so a killed
process loses at most that much; config.json is rewritten at each flush with the latest
figures and a heartbeat (`updated_at`), which is how another process tells a live run from
an orphan.

Weights (weights.py) are written when the loop hands them over (on_weights) or, from a worker
process, as bytes (write_weights), checked against this run's own config either way. The final
weights are always kept. The initial ones are kept when `keep_initial` says so; by default
(None) for twin runs, whose two nets start from the same weights, and wherever they are cheap
(at most INITIAL_AUTO_BYTES: ResNet-20 to -110 yes, ResNet-18's 45 MB no).
"""

from __future__ import annotations

import math
import os
import platform
import re
import secrets
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import runs, weights
from .config import ModelConfig, TrainConfig, preset_name
from .runs import COMPACT_EVERY, FORMAT, KINDS, METRICS_SCHEMA, VERSION

INITIAL_AUTO_BYTES = 16 << 20  # initial weights kept by default up to this size (ResNet-110: 7 MB)


def versions() -> dict[str, str]:
    import pandas
    import pyarrow
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pandas.__version__, "pyarrow": pyarrow.__version__, "platform": platform.platform()}


def new_run_name(label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:40] or "run"
    return f"{datetime.now():%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(3)}"


def _clean(x: Any) -> Any:
    """JSON-safe figure: NaN and inf become null."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


class RunWriter:
    """Pass it in `callbacks` of train.train(); `run_dir` is known at once, created on start."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, root: str | os.PathLike | None = None,
                 label: str = "", flush_s: float = 2.0, run_dir: str | os.PathLike | None = None,
                 keep_initial: bool | None = None):
        self.model_cfg, self.keep_initial = model_cfg, keep_initial
        self.root = Path(root) if root is not None else runs.default_root()
        label = label or preset_name(model_cfg) or "custom"
        self.run_dir = Path(run_dir) if run_dir else self.root / new_run_name(f"{label}-{train_cfg.dataset}")
        self.flush_s = flush_s
        self.meta: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "label": label, "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(), "device": "", "versions": versions(), "started_at": runs.now_iso(),
            "updated_at": runs.now_iso(), "status": "running", "message": "", "final": {},
            "layers": [], "blocks": [], "pid": os.getpid(), "host": socket.gethostname(),
        }
        self._metrics: list[dict[str, Any]] = []
        self._grads: list[tuple[int, np.ndarray]] = []  # (step, values in names/kinds order)
        self._names = np.array([], dtype=object)
        self._kinds = np.array([], dtype=object)
        self._part = {"metrics": 0, "grads": 0}
        self._since_compact = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()  # heartbeat() may come from another thread than the loop
        self.started = False

    # ------------------------------------------------------------ callbacks

    def on_start(self, info: dict[str, Any]) -> None:
        layers, blocks = list(info.get("layers", [])), list(info.get("blocks", []))
        self.meta.update(device=str(info.get("device", "")), layers=layers, blocks=blocks)
        names, kinds = runs.grads_layout(layers, blocks)
        self._names, self._kinds = np.array(names, dtype=object), np.array(kinds, dtype=object)
        # Built under a hidden name and renamed, so a listing never sees a folder without its config.
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir.with_name("." + self.run_dir.name)
        tmp.mkdir(parents=True)
        runs.atomic_write(tmp / "config.json", runs.dump_config(self.meta))
        os.replace(tmp, self.run_dir)
        runs._LIVE.add(str(self.run_dir.resolve()))
        self.started = True

    def on_log(self, row: dict[str, Any]) -> None:
        self._metrics.append(row)
        self.meta["final"].update(step=row["step"], train_loss=_clean(row["loss"]),
                                  train_accuracy=_clean(row["accuracy"]),
                                  samples_per_s=_clean(row["samples_per_s"]), seconds=_clean(row["seconds"]))
        self._maybe_flush()

    def on_eval(self, row: dict[str, Any]) -> None:
        self._metrics.append(row)
        self.meta["final"].update(test_loss=_clean(row["loss"]), test_accuracy=_clean(row["accuracy"]))
        self._maybe_flush()

    def on_grads(self, step: int, values: dict[str, np.ndarray]) -> None:
        self._grads.append((step, np.concatenate([np.asarray(values[k], np.float64).ravel() for k in KINDS])))

    def on_weights(self, which: str, tensors: dict[str, Any]) -> None:
        """The loop's weights ("initial" or "final"): written as safetensors beside the config."""
        if self.started and self.keeps(which):
            self.write_weights(which, weights.to_bytes(tensors))

    def write_weights(self, which: str, data: bytes) -> None:
        """Safetensors bytes (e.g. streamed from a worker), checked against this run's config, written atomically.

        weights.WeightsError if they do not fit the config; nothing is written then."""
        if not self.started or not self.keeps(which):
            return
        weights.check(data, self.model_cfg, weights.FILES[which])
        weights.save(self.run_dir, which, data)

    def keeps(self, which: str) -> bool:
        """Whether `which` weights are written (module docstring)."""
        if which not in weights.FILES:
            raise ValueError(f"which must be one of {', '.join(weights.FILES)}, not {which!r}")
        if which == "final":
            return True
        if self.keep_initial is not None:
            return self.keep_initial
        return "twin" in self.meta or weights.expected_bytes(self.model_cfg) <= INITIAL_AUTO_BYTES

    def on_end(self, result: Any) -> None:
        """Final status and figures; everything buffered is written and the parts are merged."""
        if not self.started:
            return  # failed before anything was written (e.g. dataset unavailable): leave no folder
        self.meta["status"] = result.status
        self.meta["message"] = result.message
        self.meta["final"].update({k: _clean(v) for k, v in result.figures().items()})
        try:
            self.flush()
            for kind in ("metrics", "grads"):
                runs.compact(self.run_dir, kind)
        finally:
            runs._LIVE.discard(str(self.run_dir.resolve()))

    def heartbeat(self) -> None:
        """Called while paused: keeps `updated_at` fresh so other processes see a live run."""
        if self.started:
            self._maybe_flush()

    # ------------------------------------------------------------ writing

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            metrics, self._metrics = self._metrics, []
            grads, self._grads = self._grads, []
            if metrics:
                self._part["metrics"] += 1
                cols = {name: [r.get(name) for r in metrics] for name in METRICS_SCHEMA.names}
                cols["samples_per_s"] = [math.nan if v is None else v for v in cols["samples_per_s"]]
                runs.write_part(self.run_dir, "metrics", self._part["metrics"], cols)
            if grads:
                self._part["grads"] += 1
                steps = np.repeat(np.array([s for s, _ in grads], np.int64), len(self._names))
                runs.write_part(self.run_dir, "grads", self._part["grads"], {
                    "step": steps, "layer": np.tile(self._names, len(grads)),
                    "kind": np.tile(self._kinds, len(grads)), "value": np.concatenate([v for _, v in grads])})
            self._since_compact += 1
            if self._since_compact >= COMPACT_EVERY:  # keeps a long run's folder to a few files
                self._since_compact = 0
                for kind in ("metrics", "grads"):
                    runs.compact(self.run_dir, kind)
            self.meta["updated_at"] = runs.now_iso()
            runs.atomic_write(self.run_dir / "config.json", runs.dump_config(self.meta))
            self._last_flush = time.monotonic()
