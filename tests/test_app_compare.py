"""The Compare page through AppTest: choosing runs, figures on one scale, the scrubber, uploads, damage."""

from __future__ import annotations

import base64
import functools
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from resnet_core import runzip
from resnet_core.anatomy import describe
from tests import apptest
from tests.apptest import charts, rerun
from tests.test_exports import _zip, write_record
from tests.trainkit import mnist_tiny, tiny_model, tiny_train
from ui import live


@pytest.fixture
def root(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    monkeypatch.setenv("RESNET_RUNS_DIR", str(runs_dir))
    return runs_dir


@pytest.fixture
def two(root):
    a = write_record(root, "resnet-tiny", skip=True, test_accuracy=0.75)
    b = write_record(root, "plain-tiny", skip=False, scale=1e-3, test_accuracy=0.5, steps=(1, 5, 10, 15, 20))
    return a.name, b.name


open_page = functools.partial(apptest.open_page, "compare")


def array(value) -> list:
    """A figure's array as a list: plotly sends numeric arrays as {"bdata": base64, "dtype": ...}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = tuple(int(n) for n in str(value.get("shape", len(flat))).split(","))
        return flat.reshape(shape).tolist()
    return list(value)


def table_of(at: AppTest):
    return next(d.value for d in at.dataframe if "test accuracy" in d.value.columns)


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


# ---------------------------------------------------------------- choosing and showing runs


def test_no_runs_says_what_to_do(root):
    at = open_page()
    assert "Choose one or more runs" in at.info[0].value
    assert at.multiselect(key="cmp_pick").options == []


def test_runs_from_the_url_show_curves_heatmaps_table(two):
    a, b = two
    at = open_page(cmp_runs=f"{a},{b}")
    assert at.multiselect(key="cmp_pick").value == [a, b]
    figs = charts(at)
    assert set(figs) == {"cmp_curves", "cmp_heat_0", "cmp_heat_1", "cmp_diagram_0", "cmp_diagram_1", "cmp_ratio"}

    names = {t["name"] for t in figs["cmp_curves"]["data"]}
    assert names == {"resnet-tiny · train", "resnet-tiny · test", "plain-tiny · train", "plain-tiny · test"}

    heat = [next(t for t in figs[f"cmp_heat_{i}"]["data"] if t["type"] == "heatmap") for i in (0, 1)]
    assert heat[0]["zmin"] == heat[1]["zmin"] and heat[0]["zmax"] == heat[1]["zmax"]  # one colour scale
    # the smallest weight gradient of either run: the plain one's (x 1e-3), first layer (1e-4), step 1 (x 1.1)
    assert heat[1]["zmin"] == pytest.approx(math.log10(1e-3 * 1e-4 * 1.1))

    t = table_of(at)
    assert list(t["run"]) == ["resnet-tiny", "plain-tiny"]
    assert list(t["steps"]) == [20, 20] and list(t["test accuracy"]) == [0.75, 0.5]
    assert list(t["params"]) == [describe(tiny_model()).total_params] * 2
    assert list(t["time (s)"]) == [10.0, 10.0] and t["train loss"].tolist() == pytest.approx([0.1, 0.1])
    assert at.query_params["cmp_runs"] in (f"{a},{b}", [f"{a},{b}"])

    keys = {b.key for b in at.get("download_button")}
    assert {"cmp_table_csv", "cmp_zip_0", "cmp_mcsv_0", "cmp_gcsv_0", "cmp_zip_1"} <= keys


def test_each_chart_exports_png_at_twice_the_size(two):
    at = open_page(cmp_runs=",".join(two))
    for c in at.get("plotly_chart"):
        config = json.loads(c.proto.config)
        assert config["toImageButtonOptions"]["format"] == "png" and config["toImageButtonOptions"]["scale"] == 2


def test_unknown_and_damaged_names_are_dropped_with_notes(two, root):
    bad = root / "broken-run"
    bad.mkdir()
    (bad / "config.json").write_text('{"format": "resnet-explainer-run"')  # truncated
    at = open_page(cmp_runs=f"{two[0]},nope<b>x</b>,broken-run")
    assert at.multiselect(key="cmp_pick").value == [two[0]]
    text = warnings(at)
    assert "not found here" in text and "nope<b>x</b>" in text  # shown inside a code span: literally
    assert "Damaged records" in text and "broken-run" in text and "config.json" in text
    damaged = next(d.value for d in at.dataframe if "what is wrong" in d.value.columns)
    assert list(damaged["record"]) == ["broken-run"] and damaged["what is wrong"][0].startswith("config.json")
    assert "broken-run" not in at.multiselect(key="cmp_pick").options
    assert at.query_params["cmp_runs"] in (two[0], [two[0]])  # the link now names only what is shown


def test_a_record_damaged_inside_its_rows_is_left_out_with_its_reason(two, root):
    grads = root / two[1] / "grads.parquet"
    table = pq.read_table(grads)
    kinds = pa.array(["evil"] * len(table))  # right columns and types, so only reading the rows finds it
    pq.write_table(table.set_column(table.schema.get_field_index("kind"), "kind", kinds), grads)
    at = open_page(cmp_runs=",".join(two))
    assert two[1] in warnings(at) and "grads has kind values ['evil']" in warnings(at)
    assert set(charts(at)) == {"cmp_curves", "cmp_heat_0", "cmp_diagram_0"}
    assert list(table_of(at)["run"]) == ["resnet-tiny"]


def test_malformed_url_values_fall_back_with_a_note(two):
    at = open_page(cmp_runs=",".join(two), cmp_kind="nonsense", cmp_step="-3", cmp_a="zzz")
    assert at.radio(key="cmp_kind").value == "weight_grad"
    assert at.slider(key="cmp_step").value == 20  # the latest logged step
    assert at.selectbox(key="cmp_a").value == two[0]
    assert "cmp_kind" in warnings(at) and "cmp_step" in warnings(at)


def test_kind_switch_and_scrubber_move_cursor_and_recolour(two):
    at = open_page(cmp_runs=",".join(two))
    before = charts(at)
    at.radio(key="cmp_kind").set_value("act_grad")
    rerun(at)
    heat = next(t for t in charts(at)["cmp_heat_0"]["data"] if t["type"] == "heatmap")
    assert heat["y"] == ["layer1.0", "layer2.0", "layer3.0"]  # activation gradients: one row per block
    assert at.query_params["cmp_kind"] in ("act_grad", ["act_grad"])

    at.radio(key="cmp_kind").set_value("weight_grad")
    at.slider(key="cmp_step").set_value(1)
    rerun(at)
    after = charts(at)
    for key in ("cmp_heat_0", "cmp_heat_1", "cmp_ratio"):
        assert [s["x0"] for s in after[key]["layout"]["shapes"]] == [1, 1]  # the cursor, black under white
    assert before["cmp_heat_0"]["layout"]["shapes"][0]["x0"] == 20

    def block_colours(fig):
        return array(next(t for t in fig["data"] if t.get("name") == "blocks")["marker"]["color"])

    for i in (0, 1):
        old, new = block_colours(before[f"cmp_diagram_{i}"]), block_colours(after[f"cmp_diagram_{i}"])
        assert new != old and all(n < o for n, o in zip(new, old, strict=True))  # smaller gradients at step 1
        assert after[f"cmp_diagram_{i}"]["layout"]["title"]["text"].startswith("step 1 · ")  # the step first
    plain = after["cmp_diagram_1"]
    assert block_colours(plain) == sorted(block_colours(plain))  # a decade per layer: deeper blocks brighter
    marker = [next(t for t in after[f"cmp_diagram_{i}"]["data"] if t.get("name") == "blocks")["marker"]
              for i in (0, 1)]
    assert marker[0]["cmin"] == marker[1]["cmin"] and marker[0]["cmax"] == marker[1]["cmax"]
    assert at.query_params["cmp_step"] in ("1", ["1"])

    at.slider(key="cmp_step").set_value(12)  # between plain's logged steps 10 and 15
    rerun(at)
    assert charts(at)["cmp_diagram_1"]["layout"]["title"]["text"].startswith("step 10 · ")


def test_runs_with_the_same_label_and_time_stay_apart(two, root):
    shutil.copytree(root / two[0], root / f"{two[0]}-imported-abc123")  # e.g. a record uploaded twice
    copy = f"{two[0]}-imported-abc123"
    at = open_page(cmp_runs=f"{two[0]},{copy}")
    rerun(at)  # widget values come back from the browser by their labels: equal labels would merge them
    pick = at.multiselect(key="cmp_pick")
    assert pick.value == [two[0], copy] and len(set(pick.options)) == 3
    assert len(table_of(at)) == 2 and table_of(at)["run"].is_unique
    assert at.selectbox(key="cmp_a").value == two[0] and at.selectbox(key="cmp_b").value == copy


def test_log_ratio_of_the_chosen_pair(two):
    at = open_page(cmp_runs=",".join(two))
    ratio = next(t for t in charts(at)["cmp_ratio"]["data"] if t["type"] == "heatmap")
    assert array(ratio["x"]) == [1, 10, 20]  # the steps both runs logged
    assert array(ratio["z"])[0][0] == pytest.approx(3.0, abs=1e-5)  # the plain run's figures are 1e-3 of the residual's
    at.selectbox(key="cmp_a").set_value(two[1])
    at.selectbox(key="cmp_b").set_value(two[0])
    rerun(at)
    ratio = next(t for t in charts(at)["cmp_ratio"]["data"] if t["type"] == "heatmap")
    assert array(ratio["z"])[0][0] == pytest.approx(-3.0, abs=1e-5)


def test_one_run_has_no_ratio_but_everything_else(two):
    at = open_page(cmp_runs=two[0])
    assert set(charts(at)) == {"cmp_curves", "cmp_heat_0", "cmp_diagram_0"}
    assert any("Choose two or more runs" in c.value for c in at.caption)


def test_labels_are_text_not_markup(root):
    label = '<img src=x onerror=alert(1)> **bold** %{x}'
    name = write_record(root, label).name
    at = open_page(cmp_runs=name)
    assert table_of(at)["run"][0] == label  # a dataframe cell: text
    assert label in [t.value for t in at.text]  # the download row's name: st.text
    figs = charts(at)
    shown = "&lt;img src=x onerror=alert(1)&gt; **bold** &#37;{x}"  # plotly shows entities as the characters
    assert {t["name"] for t in figs["cmp_curves"]["data"]} == {shown + " · train", shown + " · test"}
    assert all("<img" not in json.dumps(f) for f in figs.values())


# ---------------------------------------------------------------- uploads


def test_upload_round_trips_and_joins_the_comparison(two, root, tmp_path):
    source = write_record(tmp_path / "elsewhere", "uploaded-run", test_accuracy=0.625)
    data = runzip.export_zip(source)
    at = open_page(cmp_runs=two[0])
    at.file_uploader(key="cmp_upload").set_value(("record.zip", data, "application/zip"))
    rerun(at)
    assert "Imported as" in at.success[0].value and source.name in at.success[0].value
    pick = at.multiselect(key="cmp_pick")
    assert pick.value == [two[0], source.name]
    assert any(o.startswith("uploaded-run · finished · ") and o.endswith(" · uploaded") for o in pick.options)
    row = table_of(at).set_index("run").loc["uploaded-run"]
    assert row["test accuracy"] == 0.625 and row["steps"] == 20 and row["time (s)"] == 10.0
    rerun(at)  # the file stays in the uploader: it is not imported twice
    assert [p.name for p in root.iterdir() if p.name.startswith(source.name)] == [source.name]


@pytest.mark.parametrize("case, words", [
    ("zip-slip", "points outside the record"),
    ("pickle", "not part of a run record"),
    ("pickle as parquet", "pickles and other formats are never read"),
])
def test_malicious_upload_is_refused_and_writes_nothing(two, root, case, words):
    config = (root / two[0] / "config.json").read_bytes()
    import pickle

    payload = pickle.dumps(object)
    members = {"zip-slip": {"run/config.json": config, "run/../../../evil.json": b"{}"},
               "pickle": {"run/config.json": config, "run/model.pkl": payload},
               "pickle as parquet": {"run/config.json": config, "run/grads.parquet": payload}}[case]
    before = sorted(p.name for p in root.iterdir())
    at = open_page(cmp_runs=two[0])
    at.file_uploader(key="cmp_upload").set_value(("bad.zip", _zip(members), "application/zip"))
    rerun(at)
    message = at.error[0].value
    assert message.startswith("**Upload refused:**") and words in message
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written, not even a temporary folder
    assert at.multiselect(key="cmp_pick").value == [two[0]]


# ---------------------------------------------------------------- a run still training


def test_a_running_job_is_compared_from_its_live_history(root):
    live.manager.clear()  # a fresh manager writing under this test's runs folder
    manager = live.manager()
    try:
        job_id = manager.submit(mnist_tiny(), tiny_train(steps=5000, dataset="mnist-5k", batch_size=8),
                                label="live one")
        job = manager.get(job_id)
        deadline = time.time() + 60
        while (job.step < 3 or not job.run_dir or not Path(job.run_dir, "config.json").exists()) \
                and time.time() < deadline:
            time.sleep(0.1)
        job.pause()  # keeps it "running" for the page without using the CPU
        name = Path(job.run_dir).name
        at = open_page(cmp_runs=name)
        assert at.multiselect(key="cmp_pick").value == [name]
        assert any("still training" in c.value for c in at.caption)
        t = table_of(at)
        assert t["status"][0] == "paused" and t["steps"][0] >= 3
        curves = charts(at)["cmp_curves"]
        assert {tr["name"] for tr in curves["data"]} == {"live one · train"}
    finally:
        manager.shutdown()
        live.manager.clear()


def test_each_heatmap_has_its_own_steps_or_the_fraction_of_its_run_and_bn_rows_are_a_choice(root):
    short = write_record(root, "short", skip=True, steps=(1, 5, 10))  # 10 steps
    long = write_record(root, "long", skip=False, steps=(1, 10, 20, 30))  # 30 steps
    at = open_page(cmp_runs=f"{short.name},{long.name}")
    figs = charts(at)
    assert figs["cmp_heat_0"]["layout"]["xaxis"]["range"] == [0.5, 10.5]  # its own steps, not 0-30
    assert figs["cmp_heat_1"]["layout"]["xaxis"]["range"] == [0.5, 30.5]
    assert not any(s["x0"] > 10.5 for s in figs["cmp_heat_0"]["layout"].get("shapes", []))  # no cursor past it
    rows_default = figs["cmp_heat_0"]["data"][0]["y"]
    assert rows_default and not any(".bn" in r or r == "bn1" for r in rows_default)

    at.radio(key="cmp_axis").set_value("fraction")
    at.toggle(key="cmp_show_bn").set_value(True)
    rerun(at)
    figs = charts(at)
    for key in ("cmp_heat_0", "cmp_heat_1"):
        xaxis = figs[key]["layout"]["xaxis"]
        assert xaxis["range"] == [0, 1] and xaxis["tickformat"] == ".0%"
        assert array(figs[key]["data"][0]["x"])[-1] == pytest.approx(1.0)  # the last logged step ends the run
    assert any(".bn" in r or r == "bn1" for r in figs["cmp_heat_0"]["data"][0]["y"])
    cursor = [s["x0"] for s in figs["cmp_heat_0"]["layout"]["shapes"]]
    assert cursor and cursor[0] == pytest.approx(1.0)  # the scrubber at the longest run's end: each run's end
    assert at.query_params["cmp_axis"] == "fraction" and at.query_params["cmp_show_bn"] == "1"
