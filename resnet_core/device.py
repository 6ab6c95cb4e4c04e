"""Which device to train on: `auto` means CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def available() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.insert(0, "mps")
    return found


def check(name: str, have: list[str] | None = None, where: str = "here") -> None:
    """ValueError, naming what is allowed, for a name that is not a device or not in `have` (this
    machine's devices by default; a job manager passes its workers'). "auto" is always there."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r} is not allowed: one of {', '.join(DEVICES)}")
    have = available() if have is None else have
    if name != "auto" and name not in have:
        raise ValueError(f"device={name!r} is not available {where}: available are {', '.join(have)}")


def resolve(name: str = "auto") -> torch.device:
    """The torch device for `name`; ValueError naming what is available if it is not."""
    have = available()
    check(name, have)
    if name == "auto":
        return torch.device("cuda" if "cuda" in have else "mps" if "mps" in have else "cpu")
    return torch.device(name)


def describe(device: torch.device | None = None) -> str:
    """A short human label, e.g. 'CUDA · NVIDIA H100' or 'CPU · 2 threads'."""
    device = device or resolve("auto")
    if device.type == "cuda":
        return f"CUDA · {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "MPS · Apple GPU"
    n = torch.get_num_threads()
    return f"CPU · {n} thread{'s' * (n != 1)}"
