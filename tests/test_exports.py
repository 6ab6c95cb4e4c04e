"""Compare-page data shaping (resnet_core.compare) and the exports: CSV, zip round trip, refused zips.

Records are written by the real RunWriter, fed known figures through its callbacks, so every
value the tests check is known exactly without training anything.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resnet_core import compare, runs, runzip
from resnet_core.anatomy import describe
from resnet_core.figures.diagram import architecture_figure
from resnet_core.model import build_model
from resnet_core.probe import TrainingProbe
from resnet_core.recorder import RunWriter
from resnet_core.train import TrainResult
from tests.trainkit import tiny_model, tiny_train


def tiny_names(**overrides) -> tuple[list[str], list[str]]:
    with TrainingProbe(build_model(tiny_model(**overrides))) as probe:
        return probe.layer_names, probe.block_names


def grad_value(kind: str, layer: int, step: int, scale: float) -> float:
    """The figure the fake run logs: a decade per layer (input smallest), growing with the step."""
    base = {"weight_grad": 1.0, "weight_norm": 10.0, "update_ratio": 1e-3, "act_grad": 0.1,
            "shortcut_share": 1e-4}[kind]
    return scale * base * 10.0 ** (layer - 4) * (1 + step / 10)


def write_record(root: Path, label: str = "resnet-tiny", skip: bool = True, steps=(1, 10, 20), scale: float = 1.0,
                 test_accuracy: float = 0.75, status: str = "finished", loss_scale: float = 1.0) -> Path:
    """A finished record through the real writer: train rows, gradients at `steps`, one test row."""
    model, train = tiny_model(skip=skip), tiny_train(steps=max(steps))
    layers, blocks = tiny_names(skip=skip)
    w = RunWriter(model, train, root=root, label=label, flush_s=1e9)
    w.on_start({"layers": layers, "blocks": blocks, "device": "cpu"})
    for s in steps:
        w.on_log({"step": s, "split": "train", "loss": loss_scale * 2.0 / s, "accuracy": min(1.0, 0.04 * s), "lr": 0.05,
                  "seconds": 0.5 * s, "samples_per_s": 64.0})
        w.on_grads(s, {k: np.array([grad_value(k, i, s, scale) for i in range(len(names))])
                       for k, names in (("weight_grad", layers), ("weight_norm", layers),
                                        ("update_ratio", layers), ("act_grad", blocks),
                                        ("shortcut_share", blocks))})
    last = max(steps)
    w.on_eval({"step": last, "split": "test", "loss": 0.5, "accuracy": test_accuracy, "lr": 0.05,
               "seconds": 0.5 * last, "samples_per_s": math.nan})
    w.on_end(TrainResult(status, "done", step=last, steps=last, device="cpu", train_loss=loss_scale * 2.0 / last,
                         train_accuracy=min(1.0, 0.04 * last), test_loss=0.5, test_accuracy=test_accuracy,
                         seconds=0.5 * last, samples_per_s=64.0))
    return w.run_dir


@pytest.fixture
def two_runs(tmp_path):
    a = write_record(tmp_path, "resnet-tiny", skip=True, test_accuracy=0.75)
    b = write_record(tmp_path, "plain-tiny", skip=False, scale=1e-3, test_accuracy=0.5, steps=(1, 5, 10, 15, 20))
    return [compare.from_record(runs.load_run(p)) for p in (a, b)]


# ---------------------------------------------------------------- tables


def test_final_table_has_the_records_figures(two_runs):
    names = compare.unique_names(two_runs)
    table = compare.final_table(two_runs, names)
    assert list(table.columns) == list(compare.TABLE_COLUMNS)
    params = describe(tiny_model()).total_params
    a, b = table.to_dict("records")
    assert a["run"] == "resnet-tiny" and a["status"] == "finished" and a["params"] == params
    assert b["params"] == params  # option A: the plain twin has exactly the residual net's weights
    assert a["steps"] == 20 and a["time (s)"] == 10.0 and a["train loss"] == pytest.approx(0.1)
    assert a["test accuracy"] == 0.75 and b["test accuracy"] == 0.5
    assert b["net"].startswith("custom plain") and a["dataset"] == "mnist-5k"


def test_final_figures_fall_back_to_metrics_without_final(two_runs):
    v = two_runs[1]
    v.final = {"step": None, "train_loss": float("nan")}  # a record cut off before its end
    figs = compare.final_figures(v)
    assert figs == {"steps": 20.0, "time (s)": 10.0, "train loss": pytest.approx(0.1), "test accuracy": 0.5}


def test_net_names_ignore_input_and_classes():
    from resnet_core.config import preset
    from resnet_core.train import model_for_dataset

    assert compare.net_name(model_for_dataset(preset("resnet20"), "mnist-5k")) == "ResNet-20"
    assert compare.net_name(preset("plain56", num_classes=4)) == "plain-56"
    assert compare.net_name(tiny_model(skip=False)) == "custom plain-8"


def test_combine_metrics_adds_a_safe_run_column(two_runs):
    names = ["<b>bold</b> %{x}", "plain"]
    both = compare.combine_metrics(two_runs, names)
    assert len(both) == len(two_runs[0].metrics) + len(two_runs[1].metrics)
    shown = set(both["run"])
    assert shown == {"&lt;b&gt;bold&lt;/b&gt; &#37;{x}", "plain"}
    assert all("<" not in s and "%{" not in s for s in shown)


def test_unique_names_tell_equal_labels_apart(tmp_path):
    views = [compare.from_record(runs.load_run(write_record(tmp_path, "same"))) for _ in range(2)]
    views.append(compare.RunView(name="x-abc", label="other", status="finished"))
    names = compare.unique_names(views)
    assert len(set(names)) == 3 and names[2] == "other"
    assert names[0].startswith("same [") and names[0].endswith(views[0].name.rsplit("-", 1)[-1] + "]")


def test_parse_selection_sorts_names():
    sound, damaged = [f"r{i}" for i in range(12)], ["bad"]
    sel = compare.parse_selection(" r1,r1,,nope,bad,r2," + ",".join(sound), sound, damaged)
    assert sel.kept == ["r1", "r2", "r0", "r3", "r4", "r5", "r6", "r7"]  # repeats once, at most MAX_RUNS
    assert sel.unknown == ["nope"] and sel.damaged == ["bad"] and sel.over == ["r8", "r9", "r10", "r11"]
    assert compare.parse_selection("", sound) == compare.Selection([], [], [], [])


def test_csv_exports_round_trip_and_defuse_formulas(two_runs):
    v = two_runs[0]
    back = pd.read_csv(io.BytesIO(compare.metrics_csv(v)))
    want = v.metrics.sort_values(["step", "split"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)
    grads = pd.read_csv(io.BytesIO(compare.grads_csv(v)))
    assert len(grads) == len(v.grads) and set(grads["kind"]) == set(runs.KINDS)
    cell = pd.read_csv(io.BytesIO(compare.csv_bytes(pd.DataFrame({"run": ["=HYPERLINK(1)", "ok"]}))))
    assert list(cell["run"]) == ["'=HYPERLINK(1)", "ok"]


# ---------------------------------------------------------------- heatmaps, scrubber, diagram


def test_steps_and_step_at(two_runs):
    assert compare.logged_steps(two_runs).tolist() == [1, 5, 10, 15, 20]
    g = two_runs[0].grads  # logged at 1, 10, 20
    assert [compare.step_at(g, "weight_grad", s) for s in (0, 1, 9, 10, 15, 99)] == [1, 1, 1, 10, 10, 20]
    assert compare.step_at(g.iloc[0:0], "weight_grad", 5) is None


@pytest.mark.parametrize("kind", ["weight_grad", "act_grad", "update_ratio", "weight_norm"])
def test_block_series_agrees_with_the_live_pages_block_values(two_runs, kind):
    from ui.live import block_values  # the Train page's per-block figures: the oracle

    v = two_runs[1]
    series = compare.block_series(v.grads, kind, v.blocks)
    for step in compare.logged_steps([v]):
        want = block_values(v.grads, kind, v.blocks, step=int(step))
        got = series[series["step"] == step].set_index("block")["value"].to_dict()
        assert got.keys() == want.keys() == set(v.blocks)
        assert got == pytest.approx(want, rel=1e-12)


def test_layer_orders(two_runs):
    a, b = two_runs
    assert compare.layer_order(a, "act_grad") == a.blocks == ["layer1.0", "layer2.0", "layer3.0"]
    assert compare.layer_order(a, "weight_grad")[0] == "conv1"
    assert compare.common_layers(a, b, "weight_grad") == a.layers  # twins: the same layers
    a.layers = []  # an older record that did not say: taken from the gradients, in logged order
    assert compare.layer_order(a, "weight_grad") == b.layers


def test_share_diagram_scale_puts_two_diagrams_on_one_scale(two_runs):
    series = [compare.block_series(v.grads, "weight_grad", v.blocks) for v in two_runs]
    lo, hi = compare.value_range(series)
    assert lo == series[1]["value"].min() and hi == series[0]["value"].max()
    figs = []
    for v, s in zip(two_runs, series, strict=True):
        values = dict(zip(s["block"], s["value"], strict=True))
        figs.append(compare.share_diagram_scale(architecture_figure(v.model, block_values=values), (lo, hi)))
    markers = [next(t for t in f.data if t.name == "blocks").marker for f in figs]
    assert all(m.cmin == pytest.approx(math.log10(lo)) and m.cmax == pytest.approx(math.log10(hi)) for m in markers)
    assert markers[0].colorbar.ticktext[0].startswith("1e")
    assert compare.value_range([]) is None


# ---------------------------------------------------------------- zips


def test_zip_export_import_round_trip(two_runs, tmp_path):
    original = two_runs[0]
    data = runzip.export_zip(original.path)
    back = compare.from_record(runzip.import_zip(data, tmp_path / "elsewhere"))
    assert back.damaged is None and back.name == original.name and back.path.parent == tmp_path / "elsewhere"
    pd.testing.assert_frame_equal(back.metrics, original.metrics)
    pd.testing.assert_frame_equal(back.grads, original.grads)
    assert compare.final_table([back], ["x"]).equals(compare.final_table([original], ["x"]))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def malicious(record: Path) -> dict[str, tuple[bytes, str]]:
    config = (record / "config.json").read_bytes()
    metrics = (record / "metrics.parquet").read_bytes()
    payload = pickle.dumps({"rows": [1, 2, 3]})
    return {
        "zip-slip": (_zip({"run/config.json": config, "run/../../evil.json": b"{}"}), "outside the record"),
        "absolute": (_zip({"/etc/config.json": config}), "absolute"),
        "pickle member": (_zip({"run/config.json": config, "run/model.pkl": payload}), "not part of a run record"),
        "pickle as parquet": (_zip({"run/config.json": config, "run/metrics.parquet": payload}),
                              "pickles and other formats are never read"),
        "wrong schema": (_zip({"run/config.json": config, "run/grads.parquet": metrics}), "not a valid grads table"),
        "bad config": (_zip({"run/config.json": json.dumps({"format": "x"}).encode()}), "config.json is not valid"),
        "not a zip": (b"hello", "not a zip archive"),
    }


@pytest.mark.parametrize("case", ["zip-slip", "absolute", "pickle member", "pickle as parquet", "wrong schema",
                                  "bad config", "not a zip"])
def test_malicious_zips_are_refused_and_nothing_is_written(two_runs, tmp_path, case):
    data, words = malicious(two_runs[0].path)[case]
    root = tmp_path / "uploads"
    with pytest.raises(runzip.ImportRefused, match=words):
        runzip.import_zip(data, root)
    assert not root.exists() or not any(root.iterdir())
    assert not (tmp_path.parent / "evil.json").exists()


def _naive_rows_at(grads: pd.DataFrame, kind: str, step: int | None):
    """The oracle: every row looked at."""
    sel = grads[grads["kind"] == kind]
    if not len(sel):
        return None, sel
    before = sel[sel["step"] <= step] if step is not None else sel
    at = int(before["step"].max()) if len(before) else int(sel["step"].min())
    return at, sel[sel["step"] == at]


@pytest.mark.parametrize("order", ["as logged", "shuffled"])
def test_rows_at_finds_the_rows_an_exhaustive_filter_finds(order):
    rng = np.random.default_rng(3)
    rows = []
    for step in (1, 2, 5, 9, 10, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40):
        # weight_grad at every step; act_grad missing from the last ten (the bisection's give-up case);
        # update_ratio only at step 2
        kinds = ["weight_grad"] + (["act_grad"] if step < 31 else []) + (["update_ratio"] if step == 2 else [])
        rows += [(step, kind, f"layer{i}", float(rng.random())) for kind in kinds for i in range(3)]
    grads = pd.DataFrame(rows, columns=["step", "kind", "layer", "value"])
    if order == "shuffled":
        grads = grads.sample(frac=1, random_state=0)
    for kind in ("weight_grad", "act_grad", "update_ratio", "shortcut_share"):
        for step in (None, 0, 1, 3, 9, 10, 11, 31, 36, 40, 99):
            at, got = compare.rows_at(grads, kind, step)
            want_at, want = _naive_rows_at(grads, kind, step)
            assert at == want_at, (kind, step)
            pd.testing.assert_frame_equal(got.sort_values(["layer"]), want.sort_values(["layer"]))
    assert compare.rows_at(grads, "act_grad", 35)[0] == 30  # missing at 31-35: found further back
    assert compare.rows_at(grads.iloc[0:0], "weight_grad", None)[0] is None
