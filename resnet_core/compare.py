"""Data shaping for the Compare page: runs side by side, whatever they came from.

A run to compare is a `RunView`: a saved record, or a job still training (the page builds
that one from the job's in-memory history). Everything here is a plain function of views
and frames, so the page stays thin and the tests need no browser. Labels come from users
(uploads, other sessions), so text meant for a plotly figure goes through `plot_text`, and
CSV cells through `csv_bytes`.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .config import ModelConfig, TrainConfig, net_label
from .runs import GRADS_SCHEMA, METRICS_SCHEMA, RunRecord

MAX_RUNS = 8  # one Okabe-Ito colour each on the overlaid curves
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")  # run folder names, as the writer and the importer make them
TABLE_COLUMNS = ("run", "status", "net", "dataset", "params", "steps", "time (s)", "train loss", "test accuracy")


@dataclass
class RunView:
    name: str  # the record's folder name: the run's id in URLs
    label: str  # what users called it: free text, never trusted as markup
    status: str
    model: ModelConfig | None = None
    train: TrainConfig | None = None
    layers: list[str] = field(default_factory=list)  # network order, input first
    blocks: list[str] = field(default_factory=list)
    metrics: pd.DataFrame = field(default_factory=lambda: METRICS_SCHEMA.empty_table().to_pandas())
    grads: pd.DataFrame = field(default_factory=lambda: GRADS_SCHEMA.empty_table().to_pandas())
    final: dict[str, Any] = field(default_factory=dict)  # config.json "final" (step, seconds, losses...)
    path: Path | None = None
    started_at: str = ""
    damaged: str | None = None  # what is wrong; None for a sound record


def from_record(rec: RunRecord) -> RunView:
    """A loaded record as a view (tables empty where the record has none)."""
    view = RunView(name=rec.name, label=rec.label, status=rec.status, model=rec.model, train=rec.train,
                   layers=list(rec.meta.get("layers") or []), blocks=list(rec.meta.get("blocks") or []),
                   final=dict(rec.meta.get("final") or {}) if isinstance(rec.meta.get("final"), dict) else {},
                   path=rec.path, started_at=str(rec.meta.get("started_at", "")), damaged=rec.damaged)
    if rec.metrics is not None:
        view.metrics = rec.metrics
    if rec.grads is not None:
        # Categories: a cached view is copied (pickled) on every page run, ~10x faster than strings.
        view.grads = rec.grads.astype({"layer": "category", "kind": "category"})
    return view


# ---------------------------------------------------------------- choosing runs


@dataclass(frozen=True)
class Selection:
    kept: list[str]  # sound runs named, in the order given, no repeats
    unknown: list[str]  # names of no record here
    damaged: list[str]  # names of damaged records
    over: list[str]  # sound runs beyond MAX_RUNS


def parse_selection(raw: str, sound: Iterable[str], damaged: Iterable[str] = ()) -> Selection:
    """A comma-separated list of folder names (from a URL) split into what can be shown and what not."""
    sound, damaged = set(sound), set(damaged)
    kept: list[str] = []
    unknown: list[str] = []
    bad: list[str] = []
    over: list[str] = []
    for name in dict.fromkeys(n.strip() for n in str(raw).split(",")):
        if not name:
            continue
        if name in sound:
            (kept if len(kept) < MAX_RUNS else over).append(name)
        elif name in damaged:
            bad.append(name)
        else:
            unknown.append(name)
    return Selection(kept, unknown, bad, over)


def unique_names(views: Sequence[RunView]) -> list[str]:
    """One display name per view: its label, plus its folder's last token where labels repeat."""
    labels = [v.label.strip() or v.name for v in views]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    out, seen = [], set()
    for v, label in zip(views, labels, strict=True):
        name = label if counts[label] == 1 else f"{label} [{v.name.rsplit('-', 1)[-1]}]"
        while name in seen:  # same label and same token: fall back to the whole folder name
            name = f"{label} [{v.name}]" if name != f"{label} [{v.name}]" else name + "'"
        seen.add(name)
        out.append(name)
    return out


def plot_text(text: str, limit: int = 48) -> str:
    """User text for a plotly figure: shortened, and shown as itself rather than as markup or a template.

    Plotly renders a subset of HTML (<b>, <a href>) in names and titles and substitutes %{...}
    in hover templates; escaping <, >, & and % makes both show literally.
    """
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False).replace("%", "&#37;")


# ---------------------------------------------------------------- tables


def combine_metrics(views: Sequence[RunView], names: Sequence[str]) -> pd.DataFrame:
    """Every view's metrics stacked, with a `run` column of figure-safe names (for curves_figure)."""
    parts = [v.metrics.assign(run=plot_text(n)) for v, n in zip(views, names, strict=True) if len(v.metrics)]
    if not parts:
        return pd.DataFrame(columns=[*METRICS_SCHEMA.names, "run"])
    return pd.concat(parts, ignore_index=True)


def params_of(cfg: ModelConfig | None) -> int | None:
    if cfg is None:
        return None
    from .anatomy import describe  # torch-heavy: imported when first needed

    try:
        return describe(cfg).total_params
    except Exception:  # a record's config that builds no net must not take the table down
        return None


def net_name(cfg: ModelConfig) -> str:
    """The preset a net is, whatever its input and classes, as every page writes it (config.net_label)."""
    return net_label(cfg)


def final_figures(view: RunView) -> dict[str, float]:
    """Steps done, training seconds, last train loss, last test accuracy: from the record's final
    figures, else from its metrics rows (a run still training, or one killed before its end)."""
    m = view.metrics
    train = m[m["split"] == "train"].sort_values("step") if len(m) else m
    test = m[m["split"] == "test"].sort_values("step") if len(m) else m

    def pick(key: str, rows: pd.DataFrame, column: str) -> float:
        v = view.final.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
        return float(rows[column].iloc[-1]) if len(rows) else math.nan

    return {"steps": pick("step", train, "step"), "time (s)": pick("seconds", train, "seconds"),
            "train loss": pick("train_loss", train, "loss"), "test accuracy": pick("test_accuracy", test, "accuracy")}


def final_table(views: Sequence[RunView], names: Sequence[str],
                params: Mapping[str, int | None] | None = None) -> pd.DataFrame:
    """One row per run: the figures a class compares. `params` maps run name to a known count."""
    rows = []
    for v, n in zip(views, names, strict=True):
        count = params.get(v.name) if params is not None else params_of(v.model)
        net = net_name(v.model) if v.model is not None else ""
        figs = final_figures(v)
        rows.append({"run": n, "status": v.status, "net": net, "dataset": v.train.dataset if v.train else "",
                     "params": count, **figs})
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    df["params"] = df["params"].astype("Int64")
    df["steps"] = df["steps"].astype("Float64").round().astype("Int64")
    return df


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV of `df`; a text cell that a spreadsheet would run as a formula is prefixed with '."""
    safe = df.copy()
    for col in safe.columns:
        if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(lambda s: "'" + s if isinstance(s, str) and s.startswith(_FORMULA) else s)
    return safe.to_csv(index=False).encode()


def metrics_csv(view: RunView) -> bytes:
    return csv_bytes(view.metrics.sort_values(["step", "split"], kind="stable"))


def grads_csv(view: RunView) -> bytes:
    return csv_bytes(view.grads)


# ---------------------------------------------------------------- heatmaps and the time scrubber


def layer_order(view: RunView, kind: str) -> list[str]:
    """Rows of `view`'s heatmap: blocks for activation gradients, else layers; from the grads if unsaid."""
    order = view.blocks if kind == "act_grad" else view.layers
    if order:
        return list(order)
    rows = view.grads[view.grads["kind"] == kind]
    return list(dict.fromkeys(rows["layer"]))


def common_layers(a: RunView, b: RunView, kind: str) -> list[str]:
    """Layers both runs have, in `a`'s order: a ratio needs the same layer in both."""
    theirs = set(layer_order(b, kind))
    return [n for n in layer_order(a, kind) if n in theirs]


def logged_steps(views: Sequence[RunView]) -> np.ndarray:
    """Every step at which some view logged gradients, sorted."""
    steps = [v.grads["step"].to_numpy(np.int64) for v in views if len(v.grads)]
    return np.unique(np.concatenate(steps)) if steps else np.empty(0, np.int64)


def step_at(grads: pd.DataFrame, kind: str, step: int) -> int | None:
    """The last step at or before `step` with `kind` logged; the first one if `step` is earlier; None if none."""
    return rows_at(grads, kind, step)[0]


def rows_at(grads: pd.DataFrame, kind: str, step: int | None = None) -> tuple[int | None, pd.DataFrame]:
    """(the step, its rows of `kind`): the last step at or before `step` (default: the latest) with `kind`
    logged, or the first one if `step` is earlier; (None, no rows) if `kind` was never logged.

    A live run's rows arrive a whole logged step at a time, in order, so the step column is sorted and
    the rows are found by bisection: what grows with the history is one vectorised check that the
    column is sorted, not a filter of every row by kind (that took ~10 ms a net at 2,000 logged steps).
    Otherwise, or when `kind` is missing from the last few steps found, every row is looked at.
    """
    steps = grads["step"].to_numpy(np.int64)
    if len(steps) and bool((steps[1:] >= steps[:-1]).all()):
        end = len(steps) if step is None else int(np.searchsorted(steps, step, "right"))
        for _ in range(8):  # every kind is logged at every logged step: the first step found has it
            if end == 0:
                break
            start = int(np.searchsorted(steps, steps[end - 1], "left"))
            chunk = grads.iloc[start:end]
            rows = chunk[chunk["kind"].to_numpy() == kind]
            if len(rows):
                return int(steps[start]), rows
            end = start
    sel = grads[grads["kind"] == kind]
    if not len(sel):
        return None, sel
    logged = sel["step"].to_numpy(np.int64)
    before = logged if step is None else logged[logged <= step]
    at = int(before.max()) if len(before) else int(logged.min())
    return at, sel[logged == at]


def block_series(grads: pd.DataFrame, kind: str, blocks: Sequence[str]) -> pd.DataFrame:
    """(step, block, value) for every logged step at once, combined per block as live.block_values does:
    act_grad as logged (it is measured at block outputs), update_ratio as the mean of the block's layers,
    norms as the root of the sum of squares."""
    sel = grads[grads["kind"] == kind]
    if not len(sel) or not blocks:
        return pd.DataFrame({"step": np.empty(0, np.int64), "block": [], "value": np.empty(0)})
    if kind == "act_grad":
        rows = sel[sel["layer"].isin(set(blocks))]
        return pd.DataFrame({"step": rows["step"].to_numpy(np.int64), "block": rows["layer"].to_numpy(object),
                             "value": rows["value"].to_numpy(float)})
    # the block of "layer2.3.conv1" is "layer2.3"; matched once per distinct layer name, not per row
    codes, names = pd.factorize(sel["layer"])
    owner = np.array([next((b for b in blocks if str(n).startswith(b + ".")), None) for n in names] + [None],
                     dtype=object)
    block = owner[codes]  # code -1 (a missing name) picks the trailing None
    keep = block != None  # noqa: E711 (elementwise on an object array)
    frame = pd.DataFrame({"step": sel["step"].to_numpy(np.int64)[keep], "block": block[keep],
                          "value": sel["value"].to_numpy(float)[keep]})
    if kind == "update_ratio":
        out = frame.groupby(["step", "block"], sort=True)["value"].mean()
    else:
        out = np.sqrt((frame["value"] ** 2).groupby([frame["step"], frame["block"]], sort=True).sum())
    return out.rename("value").reset_index()


def value_range(frames: Iterable[pd.DataFrame]) -> tuple[float, float] | None:
    """(smallest, largest) positive finite `value` over all frames: one colour scale for all of them."""
    vals = [f["value"].to_numpy(float) for f in frames if len(f)]
    pos = np.concatenate(vals + [np.empty(0)])
    pos = pos[np.isfinite(pos) & (pos > 0)]
    return (float(pos.min()), float(pos.max())) if len(pos) else None


def share_diagram_scale(fig: go.Figure, zrange: tuple[float, float] | None) -> go.Figure:
    """Put a coloured architecture diagram on the colour scale (low, high), in real units.

    architecture_figure scales its colours to the values it is given, which suits one run; runs
    compared side by side, and one run replayed step by step, need one fixed scale for colour to
    mean the same thing everywhere.
    """
    if zrange is None:
        return fig
    lo, hi = (math.log10(v) for v in zrange)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    every = max(1, math.ceil((hi - lo) / 8))
    ticks = list(range(math.floor(lo), math.ceil(hi) + 1, every))
    for trace in fig.data:
        if trace.name == "blocks" and trace.marker.colorscale is not None:
            trace.marker.cmin, trace.marker.cmax = lo, hi
            trace.marker.colorbar.tickvals = ticks
            trace.marker.colorbar.ticktext = [f"1e{t}" for t in ticks]
    return fig
