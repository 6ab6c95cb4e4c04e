"""Finding, loading and exporting runs, for pages that show more than one.

Records are read once per change: the cache key holds each folder's mtime, which moves
whenever the writer adds a part or rewrites config.json (both are renames into the folder).
A job still training is read from its in-memory history instead, which is seconds ahead of
its record.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from resnet_core import compare, runs, runzip
from resnet_core.compare import RunView
from resnet_core.jobs import Job
from ui import live

# ---------------------------------------------------------------- the catalogue


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


# `stamp` is unused in the body on purpose: it is the part of the key that changes with the record.
@st.cache_data(max_entries=64, show_spinner=False)
def _load(path: str, stamp: int) -> RunView:
    return compare.from_record(runs.load_run(path))


# ttl: a record whose writer died on another host turns "interrupted" with time alone
@st.cache_data(max_entries=8, ttl=30, show_spinner=False)
def _listing(root: str, stamp: tuple[tuple[str, int], ...]) -> list[runs.RunRecord]:
    return runs.list_runs(root)


@dataclass
class Catalogue:
    records: dict[str, runs.RunRecord] = field(default_factory=dict)  # sound records by folder name
    damaged: dict[str, str] = field(default_factory=dict)  # folder name -> what is wrong
    jobs: dict[str, Job] = field(default_factory=dict)  # jobs of this server still training, by folder name
    queued: int = 0  # jobs that have no record yet


def saved_runs() -> list[runs.RunRecord]:
    """`runs.list_runs()` of the runs folder, read again only when a record's folder changed:
    every session's page view shares one reading (a listing reads each record's config and
    parquet footers, ~0.5 ms a record)."""
    root = runs.default_root()
    stamp: tuple[tuple[str, int], ...] = ()
    if root.is_dir():
        stamp = tuple(sorted((p.name, _stamp(p)) for p in root.iterdir() if p.is_dir()))
    return _listing(str(root), stamp)


def private_runs() -> bool:
    """RESNET_PRIVATE_RUNS=1: each browser sees only the runs it trained or uploaded on this server
    (classes that share a runs folder otherwise see each other's)."""
    return os.environ.get("RESNET_PRIVATE_RUNS", "").strip().lower() in ("1", "true", "yes", "on")


def own_names() -> set[str]:
    """Folder names of the records this browser made here: its jobs' records and its uploads."""
    owner = live.session_owner()
    names = {Path(j.run_dir).name for j in live.jobs(owner=owner) if j.run_dir}
    return names | set(st.session_state.get("cmp_uploaded", set()))


def visible_runs() -> list[runs.RunRecord]:
    """The saved records this browser may list, its own first (newest first within each group)."""
    mine = own_names()
    records = [r for r in saved_runs() if r.name in mine or not private_runs()]
    return sorted(records, key=lambda r: r.name not in mine)  # stable: keeps the listing's order within


def catalogue() -> Catalogue:
    """Every run this page can show: saved records (this server's jobs write theirs there too)."""
    cat = Catalogue()
    mine = own_names()
    for rec in visible_runs():
        if rec.damaged:
            cat.damaged[rec.name] = rec.damaged
        else:
            cat.records[rec.name] = rec
    for job in live.jobs():
        if job.done or private_runs() and Path(job.run_dir or "").name not in mine:
            continue
        if not job.run_dir:
            cat.queued += 1
            continue
        name = Path(job.run_dir).name
        if name not in cat.records and name not in cat.damaged and Path(job.run_dir, "config.json").exists():
            cat.records[name] = runs.load_run(job.run_dir, tables=False)  # it started after the listing
        if name in cat.records:
            cat.jobs[name] = job
    return cat


def option_labels(cat: Catalogue, uploaded: set[str]) -> dict[str, str]:
    """What the run picker shows for each run: plain text (option labels are not markdown), and unique,
    because Streamlit tells a multiselect's options apart by their labels."""
    labels = {}
    for name, rec in cat.records.items():
        job = cat.jobs.get(name)
        status = job.state if job is not None else rec.status
        when = str(rec.meta.get("started_at", ""))[:16].replace("T", " ")
        labels[name] = f"{rec.label} · {status} · {when}" + (" · uploaded" if name in uploaded else "")
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {n: label if counts[label] == 1 else f"{label} · {n}" for n, label in labels.items()}


def view(cat: Catalogue, name: str) -> RunView:
    """The run's view with its tables: live rows for a job still training, else the (cached) record."""
    job = cat.jobs.get(name)
    if job is not None and not job.done:
        return job_view(job)
    path = cat.records[name].path
    return _load(str(path), _stamp(path))


# Per record and kind: the range a diagram's colours span over the whole run (all steps, all blocks).
@st.cache_data(max_entries=256, show_spinner=False)
def _block_range(path: str, stamp: int, kind: str) -> tuple[float, float] | None:
    v = _load(path, stamp)
    return compare.value_range([compare.block_series(v.grads, kind, v.blocks)])


def block_range(cat: Catalogue, v: RunView, kind: str) -> tuple[float, float] | None:
    """(smallest, largest) per-block value of `kind` over the run; cached for records, fresh for live jobs."""
    job = cat.jobs.get(v.name)
    if (job is not None and not job.done) or v.path is None:
        return compare.value_range([compare.block_series(v.grads, kind, v.blocks)])
    return _block_range(str(v.path), _stamp(v.path), kind)


def job_view(job: Job) -> RunView:
    h = live.history(job)
    metrics = h.metrics
    train = metrics[metrics["split"] == "train"]
    final = {"step": job.step, "train_loss": job.train_loss, "test_accuracy": job.test_accuracy,
             "seconds": float(train["seconds"].iloc[-1]) if len(train) else None}
    return RunView(name=Path(job.run_dir).name, label=job.label or Path(job.run_dir).name, status=job.state,
                   model=job.model_cfg, train=job.train_cfg, layers=list(job.layers), blocks=list(job.blocks),
                   metrics=metrics, grads=h.grads, final=final, path=Path(job.run_dir))


# ---------------------------------------------------------------- uploads


def import_upload(upload) -> tuple[str | None, str]:
    """(new record's folder name, "") or (None, why it was refused); nothing is written when refused."""
    try:
        rec = runzip.import_zip(upload, runs.default_root())
    except runzip.ImportRefused as e:
        return None, str(e)
    except OSError as e:  # the runs folder is full or read-only: say so, never a traceback
        return None, f"the record could not be written to the runs folder: {e.strerror or e}"
    _listing.clear()
    if rec.damaged:  # checked on import, so only a disk fault gets here
        return None, f"the record was written but reads back damaged: {rec.damaged}"
    return rec.name, ""


# ---------------------------------------------------------------- downloads


def download_row(v: RunView, shown: str, i: int) -> None:
    """The run's record as a zip, its metrics and its gradients as CSV; made only when clicked."""
    cols = st.columns([3, 1, 1, 1])
    cols[0].text(shown)  # user text: shown as text
    if v.path is not None:
        cols[1].download_button("Record (.zip)", functools.partial(runzip.export_zip, v.path),
                                file_name=f"{v.name}.zip", mime="application/zip", key=f"cmp_zip_{i}",
                                icon=":material/folder_zip:", on_click="ignore", width="stretch")
    cols[2].download_button("Metrics (.csv)", functools.partial(compare.metrics_csv, v),
                            file_name=f"{v.name}-metrics.csv", mime="text/csv", key=f"cmp_mcsv_{i}",
                            icon=":material/table:", on_click="ignore", width="stretch")
    cols[3].download_button("Gradients (.csv)", functools.partial(compare.grads_csv, v),
                            file_name=f"{v.name}-grads.csv", mime="text/csv", key=f"cmp_gcsv_{i}",
                            icon=":material/grid_on:", on_click="ignore", width="stretch")
