"""This machine's measured training speed, for the pages' time estimates (resnet_core/speed.py)."""

from __future__ import annotations

import streamlit as st

from resnet_core import data, speed
from resnet_core.config import ModelConfig, TrainConfig
from resnet_core.device import available
from ui import live, runs_view


def cache_file():
    return data.data_root() / "speed.json"


@st.cache_resource(show_spinner=False)
def _calibrating() -> object:
    """Once per server, and only where nothing else measured this machine: a few seconds of CPU."""
    return speed.calibrate_in_background(cache_file())


def machine_speed() -> speed.Speed:
    """The best measured speed: a run training now, earlier records, the calibration (started in the
    background the first time none of these exists; until it ends the reference CPU's, said so)."""
    got = speed.best(jobs=live.jobs(), records=runs_view.saved_runs(), cache_file=cache_file())
    if got is speed.REFERENCE:
        _calibrating()
    return got


def on_gpu(device: str) -> bool:
    return device in ("cuda", "mps") or (device == "auto" and available()[0] != "cpu")


def run_seconds(model: ModelConfig, train: TrainConfig, nets: int = 1) -> float:
    """Estimated wall time of a run here; 0 where a GPU trains it (too fast to matter)."""
    if on_gpu(train.device):
        return 0.0
    return speed.estimate_seconds(model, train, machine_speed(), nets)


def basis() -> str:
    """Where the estimates come from, for a caption: 'measured from 3 earlier runs on this server'."""
    s = machine_speed()
    return ("estimated for " if s is speed.REFERENCE else "measured from ") + s.source
