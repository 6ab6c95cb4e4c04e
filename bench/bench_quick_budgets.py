"""The classroom demos' quick budgets: estimate against measured wall time. Prints figures; run from the repo root.

    python bench/bench_quick_budgets.py

Each quick budget (ui/classroom.py: Demo.quick) is trained as the page trains it, through a
JobManager (worker process, recorder) with PyTorch threads = cores - 1 as in the app, and timed
from submit to the end of its last job; the estimate is what the demo's link says, from this
machine's calibration (resnet_core/speed.py, cached per machine in the data folder's speed.json).
Nobody watches the runs here: a page open in a browser on the same CPU slows them (issue 13, part 7).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet_core import data, experiments, speed  # noqa: E402
from resnet_core.jobs import JobManager  # noqa: E402
from ui.classroom import DEMOS, degradation_budget, train_budget  # noqa: E402


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def wait(manager: JobManager, ids: list[str]) -> None:
    jobs = [manager.get(i) for i in ids]
    while not all(j.done for j in jobs):
        for j in jobs:
            j.snapshot()
        time.sleep(0.2)


def main() -> int:
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    machine = speed.calibration(data.data_root() / "speed.json")
    print(f"speed: {machine.seconds_per_flop:.3g} s per training FLOP ({machine.source}), {load()}", flush=True)
    for demo in DEMOS:
        if not demo.quick:
            continue
        q = demo.quick_query()
        with tempfile.TemporaryDirectory() as tmp:
            manager = JobManager(root=tmp, idle_s=1e6, max_running=1)
            try:
                t0 = time.perf_counter()
                if demo.page == "pages/train.py":
                    model, tcfg = train_budget(q)
                    est = speed.estimate_seconds(model, tcfg, machine, nets=2 if q["tr_twin"] == "1" else 1)
                    tcfg = replace(tcfg, device="cpu")
                    ids = list(manager.submit_twins(model, tcfg)) if q["tr_twin"] == "1" else [
                        manager.submit(model, tcfg)]
                else:
                    exp = degradation_budget(q)
                    est = experiments.estimate_seconds(exp, machine)
                    ids = experiments.submit(manager, exp)
                wait(manager, ids)
                actual = time.perf_counter() - t0
            finally:
                manager.shutdown()
        print(f"{demo.key:12s} quick {q.get('tr_steps') or q.get('dg_steps')} steps: estimate {est:6.1f} s, "
              f"actual {actual:6.1f} s ({(est / actual - 1) * 100:+.0f}%), {load()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
