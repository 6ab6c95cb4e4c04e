"""A trained net on the test split: predictions, accuracy, the confusion matrix, per-class figures
and the most confident mistakes.

predict() evaluates exactly as the training loop's own evaluation does (batches of twice the
training batch, channels_last and autocast as the run's TrainConfig and layout.py say, inputs resized to the
net's image size), so a net rebuilt from a record reproduces the test accuracy the record states,
to the last image, on the same device and data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import layout
from ..config import TrainConfig
from ..loop import autocast_for, use_channels_last


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64, the true classes
    classes: tuple[str, ...]  # names of the K classes

    @property
    def predicted(self) -> np.ndarray:  # (N,)
        return self.logits.argmax(1)

    @property
    def probabilities(self) -> np.ndarray:  # (N, K), softmax of the logits
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)


def predict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, train_cfg: TrainConfig,
            classes: tuple[str, ...], device: torch.device | str | None = None) -> Predictions:
    """`model`'s logits for images `x` (N, C, H, W) with labels `y`, computed as the loop evaluates."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    cl = use_channels_last(train_cfg, dev) and layout.channels_last_ok(model, dev)  # as Loop.setup decides
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(dev, memory_format=fmt).eval()
    size = model.cfg.image_size
    outs = []
    batch = 2 * train_cfg.batch_size  # the loop's evaluation batch: results depend on it in the last bits
    with torch.no_grad(), autocast_for(train_cfg, dev):
        for start in range(0, len(y), batch):
            xb = x[start:start + batch].to(dev)
            if xb.shape[-1] != size:
                xb = F.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False)
            outs.append(model(xb.contiguous(memory_format=fmt) if cl else xb).float().cpu())
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, model.cfg.num_classes), np.float32)
    return Predictions(logits, y.cpu().numpy().astype(np.int64), tuple(classes))


def accuracy(p: Predictions) -> float:
    return float((p.predicted == p.labels).sum()) / len(p.labels) if len(p.labels) else float("nan")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def per_class(confusion: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """One row a class: images, right, accuracy (recall) and precision; NaN where nothing to divide."""
    rows = []
    for c, name in enumerate(classes):
        count, right, called = int(confusion[c].sum()), int(confusion[c, c]), int(confusion[:, c].sum())
        rows.append({"class": c, "name": name, "count": count, "correct": right,
                     "accuracy": right / count if count else float("nan"),
                     "precision": right / called if called else float("nan")})
    return rows


def confident_mistakes(p: Predictions, n: int = 12) -> list[dict]:
    """The `n` wrong predictions the net was surest of: index into the test split, true, predicted, p."""
    probs = p.probabilities
    pred = p.predicted
    wrong = np.flatnonzero(pred != p.labels)
    conf = probs[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:n]
    return [{"index": int(i), "true": int(p.labels[i]), "predicted": int(pred[i]),
             "probability": float(probs[i, pred[i]]), "true_probability": float(probs[i, p.labels[i]])}
            for i in order]


@dataclass(frozen=True)
class Evaluation:
    predictions: Predictions
    confusion: np.ndarray  # (K, K), rows true, columns predicted
    per_class: list[dict]
    mistakes: list[dict]  # most confident first
    recorded_accuracy: float | None  # what the record says (config.json final.test_accuracy)
    device: str

    @property
    def test_accuracy(self) -> float:
        return accuracy(self.predictions)

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if x != x else x  # NaN is not JSON

        return {"test_accuracy": self.test_accuracy, "recorded_test_accuracy": self.recorded_accuracy,
                "images": int(len(self.predictions.labels)), "device": self.device,
                "per_class": [{k: num(v) if isinstance(v, float) else v for k, v in r.items()}
                              for r in self.per_class],
                "confusion": self.confusion.tolist(), "mistakes": self.mistakes}


def evaluate(model: torch.nn.Module, ds, train_cfg: TrainConfig, limit: int | None = None,
             recorded: float | None = None, mistakes: int = 12) -> Evaluation:
    """`model` on the first `limit` test images of `ds` (all by default), as the loop evaluates."""
    n = len(ds.y_test) if limit is None else min(limit, len(ds.y_test))
    p = predict(model, ds.x_test[:n], ds.y_test[:n], train_cfg, ds.classes, ds.x_test.device)
    k = max(model.cfg.num_classes, len(ds.classes))
    classes = tuple(ds.classes) + tuple(str(c) for c in range(len(ds.classes), k))
    conf = confusion_matrix(p.labels, p.predicted, k)
    return Evaluation(p, conf, per_class(conf, classes), confident_mistakes(p, mistakes), recorded,
                      str(ds.x_test.device))


def record_device(meta: dict) -> str:
    """The device the run trained on, if this machine has it; else the CPU."""
    dev = str(meta.get("device") or "cpu")
    kind = dev.split(":")[0]
    if kind == "cuda" and torch.cuda.is_available() and (int(dev.split(":")[1]) if ":" in dev else 0) \
            < torch.cuda.device_count():
        return dev
    if kind == "mps" and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def evaluate_run(run_dir, device: str | None = None, limit: int | None = None, data_root: str | None = None,
                 dataset=None) -> Evaluation:
    """Load `run_dir`'s trained net and its dataset and evaluate it (weights.WeightsError if refused,
    data.DatasetUnavailable if the dataset is not here). `device` defaults to the run's own when present."""
    from .. import data, weights
    from ..runs import load_run

    rec = load_run(run_dir, tables=False)
    dev = torch.device(device or record_device(rec.meta))
    model, rec = weights.load_model(run_dir, "final", dev)
    ds = dataset if dataset is not None else data.load(rec.train.dataset, dev, root=data_root)
    recorded = rec.meta.get("final", {}).get("test_accuracy")
    return evaluate(model, ds, rec.train, limit, recorded)
