"""Fuzzing: random and malicious input through every door a stranger can reach, counted.

    python bench/fuzz.py                 # about 25 s per target, ~2.5 minutes in all
    python bench/fuzz.py --seconds 60 --only zips,cli

Targets (hypothesis generates, no shrinking; each input either works or is refused with the
documented error, and anything else is a crash, printed with its input):

- model:  config.preset / make_config / from_dict with random field values -> ConfigError
- train:  config.make_train_config / TrainConfig.from_dict -> ConfigError or LimitError
- cli:    resnet_core.cli.main(argv) for describe, gradflow and train with random flags and values
          -> exit 0, exit 1 (a run that diverged or a dataset that is not there) or exit 2 with one
          line on stderr; never a traceback. Small limits (--max-params, --max-steps) keep accepted
          runs tiny; --download is never passed, so nothing leaves the machine.
- url:    every page through AppTest with random and malicious query strings -> no exception
- zips:   runzip.import_zip with random bytes, random zips and malicious ones (zip-slip, absolute
          paths, links, nesting, pickles, bombs, schema breaks) -> ImportRefused, or a record that
          loads undamaged; nothing is ever written outside the runs folder.

Prints, per target: inputs tried, accepted, refused, crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

torch.set_num_threads(1)  # on a small shared machine more threads are slower, not faster

MALICIOUS = [
    "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))", "../../../../etc/passwd", "/etc/passwd", "\x00",
    "\u202e", "nan", "inf", "-inf", "1e309", "-0", "0x10", "1_000", " 5 ", "9" * 300, "1," * 100, ",,,", "-1",
    "2147483648", "true", "None", "[]", "{}", "{{7*7}}", "'; DROP TABLE runs; --", "resnet20\nresnet56", "A", "pre",
]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
scalar = st.one_of(st.sampled_from(MALICIOUS), text, st.integers(-10**12, 10**12), st.floats(), st.booleans(),
                   st.none(), st.lists(st.integers(-5, 3000), max_size=8), st.just([]), st.just({}))


class Target:
    def __init__(self, name: str, seconds: float):
        self.name, self.seconds = name, seconds
        self.tried = self.accepted = self.refused = 0
        self.crashes: list[str] = []
        self.t0 = 0.0

    def open(self) -> bool:
        if not self.t0:
            self.t0 = time.monotonic()
        return time.monotonic() - self.t0 < self.seconds

    def crash(self, what: object, e: BaseException) -> None:
        self.crashes.append(f"{type(e).__name__}: {str(e)[:200]} <- {what!r}"[:600])

    def line(self) -> str:
        return (f"{self.name:<6} tried {self.tried:>6,}  accepted {self.accepted:>6,}  refused {self.refused:>6,}  "
                f"crashed {len(self.crashes)}  ({time.monotonic() - self.t0:.0f} s)")


def run(target: Target, strategy, body) -> None:
    """Feed `strategy`'s inputs to body(input) -> True (accepted) / False (refused) until the time is up."""

    @settings(max_examples=50, deadline=None, database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(x):
        if not target.open():
            return  # out of time: the rest of this batch is skipped
        target.tried += 1
        try:
            ok = body(x)
        except Exception as e:  # anything undocumented is a crash, recorded with its input
            target.crash(x, e)
        else:
            if ok:
                target.accepted += 1
            else:
                target.refused += 1

    while target.open():  # batches of 50, each with fresh random choices, until the time is up
        case()


# ---------------------------------------------------------------- model and training configs


def fuzz_model(t: Target) -> None:
    from resnet_core.config import FIELD_NAMES, PRESETS, ConfigError, from_dict, make_config, preset

    fields = st.sampled_from([*FIELD_NAMES, "depth", "evil", "__class__"])
    overrides = st.dictionaries(fields, scalar, max_size=5)

    def body(x):
        how, name, values = x
        try:
            if how == "preset":
                preset(name, **values)
            elif how == "make":
                make_config(None, **values)
            else:
                from_dict(values)
        except ConfigError:
            return False
        return True

    run(t, st.tuples(st.sampled_from(["preset", "make", "dict"]), st.sampled_from([*PRESETS, "resnet21", ""]),
                     overrides), body)


def fuzz_train(t: Target) -> None:
    from resnet_core.config import TRAIN_FIELDS, ConfigError, TrainConfig, make_train_config
    from resnet_core.limits import LimitError

    overrides = st.dictionaries(st.sampled_from([*TRAIN_FIELDS, "evil"]), scalar, max_size=6)

    def body(x):
        how, values = x
        try:
            make_train_config(None, **values) if how == "make" else TrainConfig.from_dict(values)
        except (ConfigError, LimitError):
            return False
        return True

    run(t, st.tuples(st.sampled_from(["make", "dict"]), overrides), body)


# ---------------------------------------------------------------- the command line


CLI_FLAGS = ["--preset", "--blocks", "--widths", "--block", "--stem", "--shortcut", "--skip", "--no-skip", "--bn",
             "--no-bn", "--activation", "--style", "--init", "--zero-init-residual", "--in-channels",
             "--num-classes", "--image-size", "--json", "--seed", "--batch-size", "--max-params",
             "--max-sample-mb", "--max-batch-size", "--frobnicate", "-", "--"]
TRAIN_FLAGS = ["--dataset", "--steps", "--optimizer", "--lr", "--momentum", "--nesterov", "--no-nesterov",
               "--schedule", "--weight-decay", "--device", "--log-every", "--eval-every", "--amp", "--channels-last",
               "--label", "--max-steps", "--max-train-memory-mb", "--max-download-mb"]
CLI_VALUES = st.one_of(st.sampled_from(MALICIOUS), text, st.integers(-10, 5000).map(str),
                       st.sampled_from(["resnet20", "plain20", "resnet18", "1,1,1", "4,8,8", "cpu", "cuda", "adam",
                                        "mnist-5k", "cifar10", "cosine", "bf16", "on", "0.05", "1e6"]))


def fuzz_cli(t: Target, tmp: Path) -> None:
    from resnet_core.cli import main

    out, data = tmp / "cli-runs", tmp / "cli-data"
    # tiny caps, so any run the fuzzer manages to start ends in a moment
    caps = ["--max-params", "20000", "--max-batch-size", "16", "--max-sample-mb", "8"]
    train_caps = [*caps, "--max-steps", "3", "--max-train-memory-mb", "64", "--out", str(out), "--data-root",
                  str(data), "--quiet", "--device", "cpu"]

    def body(x):
        command, pairs = x
        base = ["--blocks", "1,1,1", "--widths", "4,8,8"] + (["--steps", "2", "--batch-size", "8"]
                                                            if command == "train" else [])
        argv = [command, *base] + [a for flag, value in pairs for a in ((flag,) if value is None else (flag, value))]
        argv += train_caps if command == "train" else caps
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
        if code == 2:  # one line; a value may hold a form feed or the like, so count newlines only
            if err.getvalue().count("\n") != 1 or "Traceback" in err.getvalue():
                raise AssertionError(f"exit 2 must print one line, printed {err.getvalue()[-500:]!r}")
            return False
        if code not in (0, 1) or "Traceback" in err.getvalue():
            raise AssertionError(f"exit {code}: {err.getvalue()[-500:]}")
        return code == 0

    flags = st.one_of(st.sampled_from(CLI_FLAGS).map(lambda f: (f, "describe")),
                      st.sampled_from(TRAIN_FLAGS).map(lambda f: (f, "train")))
    pair = st.tuples(flags, st.one_of(st.none(), CLI_VALUES)).map(lambda p: (p[0][0], p[1]))
    run(t, st.tuples(st.sampled_from(["describe", "gradflow", "train"]), st.lists(pair, max_size=4)), body)


# ---------------------------------------------------------------- URL query strings


def fuzz_url(t: Target, tmp: Path) -> None:
    os.environ["RESNET_RUNS_DIR"], os.environ["RESNET_DATA_DIR"] = str(tmp / "url-runs"), str(tmp / "url-data")
    from streamlit.testing.v1 import AppTest

    from tests.apptest import APP, follow_link  # the same way into a page as tests/test_fuzz_app.py

    pages = re.findall(r'st\.Page\("pages/(\w+)\.py"', APP.read_text())

    def open_page(page: str, query: dict[str, str]) -> AppTest:
        return follow_link(page, query, timeout=120)

    AppTest.from_file(str(APP), default_timeout=120).run()  # the imports, once
    keys = {p: sorted(open_page(p, {}).query_params) for p in pages}
    values = st.one_of(st.sampled_from(MALICIOUS), text, st.integers(-10**20, 10**20).map(str),
                       st.floats().map(repr))

    def body(x):
        page, query = x
        at = open_page(page, query)
        if at.exception:
            raise AssertionError(f"exception shown: {[e.value for e in at.exception][:1]}")
        return not at.warning  # refused values come back as notes

    query = st.sampled_from(pages).flatmap(lambda p: st.tuples(
        st.just(p), st.dictionaries(st.sampled_from([*keys[p], "zz"]), values, min_size=1, max_size=6)))
    run(t, query, body)


# ---------------------------------------------------------------- uploads


def record_members(tmp: Path) -> dict[str, bytes]:
    """A real record, written by the CLI, as zip members."""
    from resnet_core.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["train", "--blocks", "1,1,1", "--widths", "4,8,8", "--batch-size", "8", "--steps", "3", "--device",
              "cpu", "--quiet", "--out", str(tmp / "zip-src")])
    (run_dir,) = list((tmp / "zip-src").iterdir())
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


def make_zip(members: list[tuple[str, bytes, bool]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are one of the malformations wanted here
        for name, data, link in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((stat.S_IFLNK if link else stat.S_IFREG) | 0o644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def fuzz_zips(t: Target, tmp: Path) -> None:
    from resnet_core import runs
    from resnet_core.limits import from_env
    from resnet_core.runzip import ImportRefused, import_zip

    good = record_members(tmp)
    meta = json.loads(good["config.json"])
    evil_meta = {**meta, "model": {**meta["model"], "block": "<img src=x>"}}
    payloads = [*good.values(), pickle.dumps({"a": 1}), pickle.dumps(object), b"PAR1" + os.urandom(64) + b"PAR1",
                json.dumps(evil_meta).encode(), json.dumps({**meta, "status": "running"}).encode(),
                json.dumps({**meta, "evil": 1}).encode(), b"{" * 5000, bytes(3 << 20), good["config.json"][:50]]
    names = ["config.json", "metrics.parquet", "grads.parquet", "metrics-00001.parquet", "grads-00007.parquet",
             "model.pkl", "notes.txt", "../evil.json", "/etc/passwd", "C:\\x\\config.json", "a/b/config.json",
             "run/", "run/config.json", "run/metrics.parquet", "run/grads.parquet", "run/../../x", "./config.json",
             "run//config.json"]
    member = st.tuples(st.one_of(st.sampled_from(names), text),
                       st.one_of(st.sampled_from(payloads), st.binary(max_size=2000)), st.booleans())  # link?
    upload = st.one_of(st.binary(max_size=4000),
                       st.lists(member, max_size=6).map(make_zip),
                       st.just(make_zip([(f"run/{n}", b, False) for n, b in good.items()])))
    dest = tmp / "zip-dest"
    limits = from_env({}, max_upload_mb=2)

    def body(blob):
        before = {p.name for p in tmp.iterdir()}
        try:
            rec = import_zip(blob, dest, limits)
        except ImportRefused:
            ok = False
        else:
            if rec.damaged or rec.path.parent != dest:
                raise AssertionError(f"imported {rec.path} damaged={rec.damaged}")
            ok = True
        if {p.name for p in tmp.iterdir()} - before - {"zip-dest"}:  # e.g. a zip-slip's ../evil.json
            raise AssertionError("something was written beside the runs folder")
        if dest.exists() and any(p.name.startswith(".import") for p in dest.iterdir()):
            raise AssertionError("a temporary import folder was left behind")
        return ok

    run(t, upload, body)
    if dest.exists():
        assert all(runs.load_run(p).damaged is None for p in dest.iterdir())


# ---------------------------------------------------------------- main


def main() -> int:
    targets = ("model", "train", "cli", "url", "zips")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=25.0, help="time per target")
    p.add_argument("--only", default=",".join(targets), help="comma-separated targets: " + ", ".join(targets))
    args = p.parse_args()
    chosen = [n for n in args.only.split(",") if n]
    if not set(chosen) <= set(targets) or not 1 <= args.seconds <= 3600:
        p.error("unknown target, or --seconds beyond 1..3600")
    tmp = Path(tempfile.mkdtemp(prefix="resnet-fuzz-"))
    results = []
    for name in chosen:
        t = Target(name, args.seconds)
        fn = {"model": fuzz_model, "train": fuzz_train, "cli": lambda t: fuzz_cli(t, tmp),
              "url": lambda t: fuzz_url(t, tmp), "zips": lambda t: fuzz_zips(t, tmp)}[name]
        try:
            fn(t)
        except Exception as e:  # a target that could not even be set up is a crash too
            t.crash("setup", e)
        print(t.line(), flush=True)
        for c in t.crashes[:5]:
            print("    " + c)
        results.append(t)
    shutil.rmtree(tmp, ignore_errors=True)
    tried, crashed = sum(t.tried for t in results), sum(len(t.crashes) for t in results)
    print(f"in all: {tried:,} inputs tried, {crashed} crashed" + ("" if crashed else ": none crashed"))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
