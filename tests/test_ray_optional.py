"""Ray is optional: without RESNET_RAY_ADDRESS (or --ray) no Ray module is imported, and the app,
the CLI and the job manager work where Ray is not installed at all; asked for without it, they
say in one line what to install. Runs in every suite, Ray installed or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter in which `import ray` fails as it does where Ray is not installed.
SCRIPT = textwrap.dedent("""
    import importlib.abc, io, json, os, sys
    from contextlib import redirect_stderr, redirect_stdout

    class NoRay(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoRay())
    import ui.live, resnet_core.cli, resnet_core.jobs  # noqa: E401 - what the app and the CLI load
    from resnet_core.cli import main
    from resnet_core.jobs import JobManager
    from resnet_core.jobs.manager import make_backend
    from resnet_core.limits import from_env

    out = {}
    m = JobManager(root=sys.argv[1] + "/runs", limits=from_env({}))  # the default backend: worker processes
    out["backend"] = m.backend.name
    m.shutdown()
    tiny = ["train", "--blocks", "1,1,1", "--widths", "4,8,8", "--steps", "3", "--batch-size", "8",
            "--device", "cpu", "--out", sys.argv[1] + "/cli", "--quiet", "--json"]
    with redirect_stdout(io.StringIO()) as printed:
        out["cli_rc"] = main(tiny)
    out["cli_status"] = json.loads(printed.getvalue().splitlines()[-1])["status"]
    out["ray_loaded"] = sorted(k for k in sys.modules if k == "ray" or k.startswith("ray."))

    os.environ["RESNET_RAY_ADDRESS"] = "127.0.0.1:6379"
    try:
        make_backend()
        out["asked"] = "no error"
    except ImportError as e:
        out["asked"] = str(e)
    with redirect_stderr(io.StringIO()) as said:
        out["cli_ray_rc"] = main(tiny)
    out["cli_ray_said"] = said.getvalue()

    # The app on a server started with RESNET_RAY_ADDRESS but no Ray: one line, no traceback
    from tests.apptest import open_page
    os.environ["RESNET_RUNS_DIR"] = sys.argv[1] + "/app-runs"
    train = open_page("train")
    out["app_train"] = {"errors": [e.value for e in train.error], "exceptions": len(train.exception),
                        "start": sum(b.key == "tr_start" for b in train.button)}
    overview = open_page(None)
    out["app_overview"] = {"errors": [e.value for e in overview.error], "exceptions": len(overview.exception),
                           "charts": len(overview.get("plotly_chart"))}
    print(json.dumps(out))
""")


def test_without_ray_nothing_imports_it_and_asking_for_it_says_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RESNET_RAY_ADDRESS", "RESNET_JOB_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "process"
    assert out["cli_rc"] == 0 and out["cli_status"] == "finished"
    assert out["ray_loaded"] == []
    assert "Ray is not installed" in out["asked"] and "pip install -r requirements-ray.txt" in out["asked"]
    assert out["cli_ray_rc"] == 1
    said = out["cli_ray_said"].strip().splitlines()
    assert len(said) == 1 and "Ray is not installed" in said[0] and "requirements-ray.txt" in said[0]
    train, overview = out["app_train"], out["app_overview"]
    assert train["exceptions"] == 0 and overview["exceptions"] == 0
    assert len(train["errors"]) == 1 and train["errors"][0].startswith("Training is off on this server: Ray is not "
                                                                       "installed"), train
    assert "requirements-ray.txt" in train["errors"][0] and train["start"] == 0  # no Start button to press
    assert overview["errors"] == [] and overview["charts"] >= 1  # a page that does not train draws as ever
