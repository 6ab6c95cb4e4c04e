"""Bad input never reaches a traceback: random and malicious URL query strings on every page
(AppTest), and user text (run labels, URL values) shown as text, never as markup; a CLI argument
holding a newline still gets a one-line error.

Each example is a fresh AppTest session that follows a link with the query string to the
page. The counts are small here; bench/fuzz.py runs the same targets for longer.
Labels on the Compare page are checked in test_app_compare.py (test_labels_are_text_not_markup).
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from resnet_core.recorder import RunWriter
from resnet_core.train import TrainResult
from tests.apptest import APP
from tests.apptest import follow_link as open_page
from tests.trainkit import mnist_tiny, tiny_train
from ui import live

# Every page app.py registers; each one's query keys are found by opening it (what it publishes).
PAGES = re.findall(r'st\.Page\("pages/(\w+)\.py"', APP.read_text())
_KEYS: dict[str, list[str]] = {}
MALICIOUS = [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[x](javascript:alert(1))",
    "![x](http://127.0.0.1:1/x.png)", ":red[hi] :material/bolt:", "$\\frac{1}{0}$", "`` ` ``", "**b** _i_",
    "../../../../etc/passwd", "/etc/passwd", "C:\\Windows", "%00", "\x00", "\u202e", "nan", "NaN", "inf", "-inf",
    "1e309", "-0", "0x10", "1_000", " 5 ", "9" * 400, "1," * 200, ",,,", "-1", "2147483648", "1e-400", "true",
    "None", "[]", "{}", "{{7*7}}", "${7*7}", "'; DROP TABLE runs; --", "resnet20\nresnet56",
]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# (value, must it be refused?): values starting "zz" are no number, switch, option or list
value = st.one_of(
    st.sampled_from(MALICIOUS).map(lambda v: (v, False)),
    text.map(lambda v: (v, False)),
    st.integers(-10**20, 10**20).map(lambda v: (str(v), False)),
    st.floats().map(lambda v: (repr(v), False)),
    text.map(lambda v: ("zz" + v, True)),
)


@pytest.fixture(scope="module", autouse=True)
def runs_folder(tmp_path_factory):
    """One runs folder for the module (hypothesis reruns the test body without function fixtures),
    and one warm-up run, so the first example does not pay for the imports."""
    saved = {k: os.environ.get(k) for k in ("RESNET_RUNS_DIR", "RESNET_DATA_DIR")}
    root = tmp_path_factory.mktemp("fuzz-app")
    os.environ["RESNET_RUNS_DIR"], os.environ["RESNET_DATA_DIR"] = str(root / "runs"), str(root / "data")
    live.manager.clear()
    AppTest.from_file(str(APP), default_timeout=60).run()
    yield root
    live.manager().shutdown()
    live.manager.clear()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def url(at: AppTest) -> dict[str, str]:
    """The page's query string after its run (AppTest keeps a list per key, as a URL may repeat one)."""
    return {k: v[-1] if isinstance(v, list) else v for k, v in at.query_params.items()}


def page_keys(page: str) -> list[str]:
    if page not in _KEYS:
        _KEYS[page] = sorted(url(open_page(page, {})))
    return _KEYS[page]


def check(page: str, query: dict[str, tuple[str, bool]]) -> AppTest:
    """No exception; a value that stands for nothing allowed is named in a note, unless the page
    keeps it as it is (free text such as run names, which get notes of their own)."""
    at = open_page(page, {k: v for k, (v, _) in query.items()})
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    kept = url(at)
    for key, (raw, refused) in query.items():
        if refused and key in page_keys(page) and kept.get(key) != raw:
            shown = " ".join(raw.split())[:30]
            assert any(f"{key}=" in w or shown in w for w in warnings), (key, raw, warnings)
    for w in warnings:
        if "URL value" in w:  # repeats the stranger's text: a code span, never markdown or HTML
            assert w.startswith("`"), w
    return at


# No shrinking: each example costs a page run, and shrinking one failure took over five minutes;
# the example as generated is printed in full.
FUZZ = settings(max_examples=15, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("page", PAGES)
@FUZZ
@given(data=st.data())
def test_query_strings(page, data):
    keys = page_keys(page)
    query = data.draw(st.dictionaries(st.sampled_from([*keys, "zz_unknown", "__proto__"]), value,
                                      min_size=1, max_size=6), label="query")
    check(page, query)


@pytest.mark.parametrize("page", PAGES)
def test_every_key_malicious_at_once(page):
    """All of a page's keys bad in one link: each gets its note, and the page still draws."""
    keys = page_keys(page)
    assert keys, f"{page} publishes no query keys"
    at = check(page, {k: ("zz" + MALICIOUS[i % len(MALICIOUS)], True) for i, k in enumerate(keys)})
    assert at.title  # the page itself, not an error page


# ---------------------------------------------------------------- text, never markup


def test_a_record_label_is_text_in_the_train_runs_table(runs_folder):
    label = "<img src=x onerror=alert(1)> **bold** [x](javascript:alert(1))"
    w = RunWriter(mnist_tiny(), tiny_train(), root=runs_folder / "runs", label=label)
    w.on_start({"layers": ["conv1"], "blocks": ["layer1.0"], "device": "cpu"})
    w.on_end(TrainResult("finished", "done", 1, 1, "cpu"))
    at = open_page("train", {})
    assert not at.exception
    tables = [d.value for d in at.get("dataframe")]
    assert any(label in t["run"].tolist() for t in tables if "run" in t)  # a dataframe cell: plain text
    assert not any(label in m.value for m in at.markdown)


def test_a_data_root_outside_the_servers_is_refused(runs_folder):
    at = open_page("train", {"tr_dataset": "mnist", "tr_steps": "5", "tr_batch_size": "8"})
    at.text_input(key="tr_data_root").set_value("/etc").run()
    at.button(key="tr_start").click().run()
    assert not at.exception
    assert any("outside this server's data folder" in e.value for e in at.error), [e.value for e in at.error]
    assert live.manager().jobs() == []


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv", [["describe", "--frobnicate", "a\nb"], ["train", "--optimizer", "sgd\nadam"],
                                  ["gradflow", "--blocks", "1\n2"], ["describe", "x\r\ny"]])
def test_cli_errors_stay_one_line_whatever_the_argument_holds(argv, capsys):
    from resnet_core.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err
