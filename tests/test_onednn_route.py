"""The route around oneDNN's 1x1 stride-2 weight-gradient bug (resnet_core/layout.py, bench/onednn_bug.py).

The subprocess tests run the product's own training path (the CLI's `train`, the twins, `gradflow`) on a
narrow net with shortcut B, whose 4-channel projection is the convolution the bug hits, with
ONEDNN_MAX_CPU_ISA=AVX2 (the kernels every x86 CPU without AVX-512 runs, selected on any x86 CPU) and one
thread. With the route removed the same commands die (the control test shows it on the torch release the
bug is known in), so these tests fail on any x86 CPU if the workaround goes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from resnet_core import layout
from resnet_core.config import PRESETS, ModelConfig, preset
from resnet_core.model import build_model
from resnet_core.train import model_for_dataset

ROOT = Path(__file__).resolve().parents[1]
NARROW = ["--preset", "resnet20", "--widths", "4,8,16", "--shortcut", "B"]
x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's AVX2 kernels are x86 only")


def narrow_cfg(shortcut: str = "B") -> ModelConfig:
    return model_for_dataset(ModelConfig(layers=(3, 3, 3), widths=(4, 8, 16), shortcut=shortcut), "mnist-5k")


def test_the_risky_convolutions_are_the_narrow_projections():
    model = build_model(narrow_cfg("B"))
    assert layout.risky_convs(model) == ["layer2.0.downsample.0"]  # 4 -> 8 channels, 1x1, stride 2
    assert not layout.channels_last_ok(model, "cpu")
    assert layout.channels_last_ok(model, "cuda")  # the bug is in a CPU kernel
    assert layout.memory_format(model, "cpu") == torch.contiguous_format
    assert layout.risky_convs(build_model(narrow_cfg("A"))) == []  # option A pads: no 1x1 conv at all
    c = build_model(narrow_cfg("C"))
    assert "layer2.0.downsample.0" in layout.risky_convs(c) and "layer3.0.downsample.0" not in layout.risky_convs(c)


@pytest.mark.parametrize("name", list(PRESETS))
def test_no_preset_loses_channels_last(name):
    # the input's channels reach only the stem, never a 1x1 conv: one dataset tells for all
    model = build_model(model_for_dataset(preset(name), "mnist-5k"))
    assert layout.channels_last_ok(model, "cpu"), (name, layout.risky_convs(model))


def _run(code: str, route: bool, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "RESNET_RUNS_DIR": str(tmp_path / "runs")}
    prelude = textwrap.dedent(f"""
        import json, sys, torch
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1
        if not {route}:  # the control: the route taken out
            import resnet_core.layout as L
            L.channels_last_ok = lambda model, device: True
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)


TRAIN = f"""
    from resnet_core.cli import main
    sys.exit(main(["train", *{NARROW!r}, "--dataset", "mnist-5k", "--steps", "30", "--batch-size", "64",
                   "--eval-every", "0", "--json", "--out", "runs"]))
"""


@x86
def test_cli_train_of_a_narrow_shortcut_b_net_finishes_on_avx2_kernels(tmp_path):
    p = _run(TRAIN, route=True, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 30
    cfg = json.loads((tmp_path / out["run_dir"] / "config.json").read_text())
    assert cfg["model"]["widths"] == [4, 8, 16] and cfg["model"]["shortcut"] == "B"
    assert 0.0 < out["final_train_loss"] < 2.5  # it learned something: gradients were right


TWINS = """
    from resnet_core.config import ModelConfig, TrainConfig
    from resnet_core.train import model_for_dataset
    from resnet_core.twins import train_twins
    cfg = model_for_dataset(ModelConfig(layers=(3, 3, 3), widths=(4, 8, 16), shortcut="B"), "mnist-5k")
    res, plain = train_twins(cfg, TrainConfig(dataset="mnist-5k", steps=30, batch_size=64, eval_every=0))
    print(json.dumps([res.status, res.step, plain.status, plain.step]))
"""


@x86
def test_twins_of_a_narrow_shortcut_b_net_finish_on_avx2_kernels(tmp_path):
    p = _run(TWINS, route=True, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == ["finished", 30, "finished", 30]


GRADFLOW = """
    from resnet_core.config import ModelConfig
    from resnet_core.probe import gradflow
    cfg = ModelConfig(layers=(3, 3, 3), widths=(4, 8, 16), shortcut="B", in_channels=1, image_size=28)
    first = gradflow(cfg, seed=0, batch_size=64)
    for _ in range(60):  # one pass rarely crashes: many do
        again = gradflow(cfg, seed=0, batch_size=64)
    print(json.dumps([first.layers, again.layers]))
"""


@x86
def test_gradflow_of_a_narrow_shortcut_b_net_is_right_on_avx2_kernels(tmp_path):
    p = _run(GRADFLOW, route=True, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    first, again = json.loads(p.stdout.strip().splitlines()[-1])
    assert first == again  # the same seed gives the same gradients, pass after pass
    # and they are the ones a float64 pass in the contiguous layout gives (the oracle)
    cfg = ModelConfig(layers=(3, 3, 3), widths=(4, 8, 16), shortcut="B", in_channels=1, image_size=28)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=gen).double()
    y = torch.randint(0, 10, (64,), generator=gen)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    want = dict(model.named_modules())["layer2.0.downsample.0"].weight.grad.norm().item()
    assert dict(first)["layer2.0.downsample.0"] == pytest.approx(want, rel=1e-3)


KNOWN_BAD = torch.__version__.startswith("2.14.") and torch.backends.mkldnn.is_available()


@x86
@pytest.mark.skipif(not KNOWN_BAD, reason=f"the bug is known in torch 2.14 (oneDNN 3.12); this is {torch.__version__}")
def test_control_without_the_route_the_same_run_dies(tmp_path):
    """Shows that the tests above test something: on the torch release the bug is in, they fail without the route."""
    p = _run(TRAIN, route=False, tmp_path=tmp_path)
    assert p.returncode != 0, "the narrow shortcut-B run survived without the route: has oneDNN been fixed?"
