"""Classroom demos: named links that set every widget of a page at once.

Each demo is a page and a full query string (every field of that page), so following
it reproduces exactly the view its caption describes; ui.state.restore applies a link's
values even when the page was open before. Captions state only what the app then
measures: tests/test_classroom.py checks each against live figures.

A demo that trains also offers a quick budget (a few query values changed) that finishes in about
a minute on a 2-core CPU and still shows what its quick caption says, measured by the tests at
exactly that budget; a demo whose point needs a long run can play a shipped recording of the
full budget instead (resnet_core/playback.py, recordings/), labelled as a recording wherever it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from resnet_core import experiments, playback, speed
from resnet_core.config import cifar_config, make_train_config, preset
from resnet_core.train import model_for_dataset
from ui import estimates, present
from ui.controls import field_values
from ui.state import Field


@dataclass(frozen=True)
class Demo:
    key: str  # stable name, also used in tests
    title: str
    caption: str  # what to notice; true of what the app measures
    page: str  # page file
    query: dict[str, str]  # every widget of the page
    plain: str = ""  # the caption in plain words, for presenter mode (the caption itself where empty)
    quick: dict[str, str] | None = None  # query values of a budget that ends in about a minute on 2 cores
    quick_caption: str = ""  # what the quick budget shows: true of it, measured (tests/test_classroom.py)
    recording: str = ""  # a shipped recording of the full budget (recordings/<name>/)

    def said(self) -> str:
        """What the demo's link says it shows: the plain words in presenter mode."""
        return (self.plain or self.caption) if present.on() else self.caption

    @property
    def prefix(self) -> str:
        return {"pages/train.py": "tr_", "pages/degradation.py": "dg_"}.get(self.page, "")

    def quick_query(self) -> dict[str, str]:
        return {**self.query, **(self.quick or {})}

    def recording_query(self) -> dict[str, str]:
        """The demo's link with its recording playing from the start, the whole run in 30 s."""
        p = self.prefix
        return {**self.query, p + "rec": self.recording, p + "rec_speed": "fit", p + "rec_pos": "0.0",
                p + "rec_play": "1"}


def _fmt(values: dict[str, Any]) -> dict[str, str]:
    return {k: Field(k, v).format(v) for k, v in values.items()}


def _gradflow(**overrides: Any) -> dict[str, str]:
    values = {"gf_depth": 56, "gf_nets": "both", "gf_bn": False, "gf_activation": "relu", "gf_style": "post",
              "gf_init": "default", "gf_zero_init": False, "gf_seed": 0, "gf_kind": "activation"}
    return _fmt({**values, **overrides})


def _model(prefix: str, name: str) -> dict[str, Any]:
    return {prefix + "preset": name, **{prefix + k: v for k, v in field_values(preset(name)).items()}}


def _architecture(name: str, compare_plain: bool = False) -> dict[str, str]:
    return _fmt({**_model("arch_", name), "arch_compare_plain": compare_plain, "arch_table_level": "block"})


def _train(name: str, **overrides: Any) -> dict[str, str]:
    values = {**_model("tr_", name), "tr_dataset": "mnist-5k", "tr_steps": 200, "tr_batch_size": 64,
              "tr_optimizer": "sgd", "tr_lr": 0.1, "tr_schedule": "onecycle", "tr_seed": 0, "tr_device": "auto",
              "tr_kind": "weight_grad", "tr_show_bn": False, "tr_twin": False, "tr_scrub": 0,
              "tr_rec": "", "tr_rec_speed": "fit", "tr_rec_pos": 0.0, "tr_rec_play": True}
    values.update(tr_in_channels=1, tr_image_size=28, tr_num_classes=10)  # the dataset's, as the page pins them
    return _fmt({**values, **overrides})


def _degradation(**overrides: Any) -> dict[str, str]:
    values = {"dg_depths": experiments.DEFAULT_DEPTHS, "dg_steps": experiments.Degradation.steps,
              "dg_batch_size": experiments.Degradation.batch_size, "dg_jobs": "", "dg_rec": "", "dg_rec_speed": "fit",
              "dg_rec_pos": 0.0, "dg_rec_play": True}
    return _fmt({**values, **overrides})


def _why(**overrides: Any) -> dict[str, str]:
    return _fmt({"why_run": "", "why_grid": 11, "why_paths": "init20", **overrides})


DEMOS: tuple[Demo, ...] = (
    Demo("vanishing", "Vanishing gradients in ten seconds",
         "56 layers, ReLU, no BatchNorm: the plain net's first block gets less than 10⁻¹⁵ of the gradient "
         "its last block gets; with skip connections it keeps about half.",
         "pages/gradient-flow.py", _gradflow(),
         "Without skip connections almost none of the learning signal gets back to the first layers of a deep "
         "net; with them, about half of it does."),
    Demo("clean-path", "Why the skip path must stay clean",
         "Sigmoid, no BatchNorm, 20 layers, post-activation blocks: even with skips the first block gets "
         "only a few millionths of the last block's gradient, because a sigmoid squashes the sum after "
         "every addition.",
         "pages/gradient-flow.py", _gradflow(gf_depth=20, gf_activation="sigmoid"),
         "Skip connections help only if nothing squashes the signal on its way back. Here a sigmoid after "
         "every addition does, and the first block gets almost nothing."),
    Demo("clean-path-pre", "… and with the skip path kept clean",
         "The same net with pre-activation blocks (He et al. 2016b): nothing follows the addition, and the "
         "residual net's first block gets about half of the last block's gradient again.",
         "pages/gradient-flow.py", _gradflow(gf_depth=20, gf_activation="sigmoid", gf_style="pre"),
         "Move the sigmoid inside each block and the skip path is clean again: the first block gets about half"
         " of the signal."),
    Demo("batchnorm", "BatchNorm changes the story",
         "56 layers with BatchNorm: the plain net's gradient now grows towards the input (its first block "
         "gets over a thousand times the last block's) instead of vanishing; the residual net stays within "
         "a few tens. Plain nets still train worse as they get deeper: see the Degradation page.",
         "pages/gradient-flow.py", _gradflow(gf_bn=True),
         "With BatchNorm the plain net's signal grows towards the input instead of fading, yet deeper plain "
         "nets still learn worse. Skip connections keep it steady."),
    Demo("bottleneck", "Basic vs bottleneck",
         "ResNet-50 uses bottleneck blocks, 1x1-3x3-1x1: three convs a block, 1 + 48 + 1 = 50 layers and "
         "25.6 M parameters. ResNet-34's basic blocks have two 3x3 convs: 1 + 32 + 1 = 34 layers, 21.8 M.",
         "pages/architecture.py", _architecture("resnet50"),
         "ResNet-50's blocks have three layers each instead of two: 50 layers and 25.6 million weights, "
         "against ResNet-34's 34 layers and 21.8 million."),
    Demo("twin56", "Plain vs residual at 56 layers",
         "Trains ResNet-56 and its plain twin in lockstep, from the same initial weights on the same "
         "batches, and shows their curves, their gradient heatmaps and the log-ratio of the two side by side.",
         "pages/train.py", _train("resnet56", tr_twin=True),
         "Two 56-layer nets learn side by side, the same in every way except the skip connections: watch which"
         " one learns.",
         quick={"tr_steps": "10", "tr_batch_size": "16"},
         quick_caption="Quick: 10 steps of 16 digits, too few to learn but enough to see the gradients. At the "
                       "first step the plain twin's first conv gets hundreds of times the weight gradient of its "
                       "output layer (BatchNorm); from the third step on, typically about a thousandth, where the "
                       "residual net's first conv gets about a tenth, a hundred times more (heatmaps, log ratio).",
         recording="twin56"),
    Demo("degradation", "Deeper plain nets train worse",
         "Plain and residual nets of 8, 20, 32 and 56 layers, 150 steps of 32 digits each, one after another: "
         "the plain nets' training loss rises with depth, and plain-56 ends far above residual-56.",
         "pages/degradation.py", _degradation(),
         "Make a plain net deeper and it learns worse, even on the examples it trains on; with skip connections "
         "depth does not hurt like that.",
         quick={"dg_depths": "8,20", "dg_steps": "30", "dg_batch_size": "16"},
         quick_caption="Quick: 8 and 20 layers, 30 steps of 16 digits each: the deeper residual net already ends "
                       "with a lower training loss than the shallow one and than the plain net of its depth; the "
                       "deeper plain net does not beat the shallow plain one.",
         recording="degradation"),
    Demo("delete-block", "Delete a block",
         "Opens the newest trained run with its plain twin (train a twin run first). Run the lesion study: every "
         "block of the residual net can be deleted, because its shortcut stays; in the plain twin the blocks that "
         "change shape have no shortcut and cannot be deleted at all. Compare the accuracies with Veit et al.'s.",
         "pages/why.py", _why(),
         "Take one block out of a trained net and see how much it still gets right; a residual net keeps a way "
         "around every block, a plain net does not."),
    Demo("landscape", "Smooth or chaotic: the loss landscape",
         "The training loss around a trained run's weights along two random filter-normalised directions, residual "
         "net and plain twin on one colour scale; the ✕ at the centre of each map is the trained net itself, and "
         "its loss there is the run's loss on the same 512 training images.",
         "pages/why.py", _why(),
         "A map of how the error changes around the trained net, for the residual net and its plain twin."),
)


# Streamlit draws a page link's label on one line and cuts it with an ellipsis; a demo's title wraps.
# And a demo link is not drawn as the current page when it opens
# the page already shown (Streamlit's page_link would: on Train every Train demo looked selected); the
# sidebar's navigation links above them still are.
_WRAP_LABELS = """<style>
[data-testid="stPageLink-NavLink"] span, [data-testid="stPageLink-NavLink"] p {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
[data-testid="stExpander"] [data-testid="stPageLink-NavLink"]:not(:hover),
[data-testid="stMain"] [data-testid="stPageLink-NavLink"]:not(:hover) { background-color: transparent !important; }
</style>"""


def seconds(demo: Demo, query: dict[str, str] | None = None) -> float:
    """How long the demo (with `query`, default its own) takes on this machine, at its measured speed
    (ui.estimates): a Gradient flow demo is one forward and backward pass of each net on a batch of 32,
    a Train or Degradation demo its whole training; an Architecture demo computes nothing worth timing (0)."""
    q = query if query is not None else demo.query
    if demo.page == "pages/gradient-flow.py":
        cfg = cifar_config(int(q["gf_depth"]), in_channels=1, image_size=28, batchnorm=q["gf_bn"] == "1",
                           activation=q["gf_activation"], style=q["gf_style"])
        return estimates.machine_speed().seconds(2 * 3.0 * speed.forward_flops(cfg) * 32)
    if demo.page == "pages/train.py":
        model, tcfg = train_budget(q)
        return estimates.run_seconds(model, tcfg, nets=2 if q["tr_twin"] == "1" else 1)
    if demo.page == "pages/degradation.py":
        return experiments.estimate_seconds(degradation_budget(q), estimates.machine_speed())
    return 0.0


def train_budget(q: dict[str, str]):
    """(model, training config) a Train demo's query trains, as pages/train.py builds them."""
    model = model_for_dataset(preset(q["tr_preset"]), q["tr_dataset"])
    steps = int(q["tr_steps"])
    return model, make_train_config(dataset=q["tr_dataset"], steps=steps, batch_size=int(q["tr_batch_size"]),
                                    lr=float(q["tr_lr"]), device=q["tr_device"], eval_every=max(10, steps // 10),
                                    log_every=max(1, -(-steps // 2000)))


def degradation_budget(q: dict[str, str]) -> experiments.Degradation:
    return experiments.Degradation(depths=tuple(sorted(int(d) for d in q["dg_depths"].split(","))),
                                   steps=int(q["dg_steps"]), batch_size=int(q["dg_batch_size"]))


def duration(demo: Demo, query: dict[str, str] | None = None) -> str:
    s = seconds(demo, query)
    if s < 1:
        return "Instant on this machine."
    return f"Takes {speed.fmt_duration(s)} on this machine ({estimates.basis()})."


def shipped(demo: Demo) -> playback.Recording | None:
    """The demo's recording, if it is shipped and sound."""
    if not demo.recording or demo.recording not in playback.list_recordings():
        return None
    from ui import playback_view

    rec = playback_view.recording(demo.recording)
    return rec if rec is not None and not rec.damaged else None


QUICK_LABEL = "… quick: about a minute"  # under the demo's own link: the same demo, a short budget
RECORDING_LABEL = "… or play its recording"


def link_labels(demo: Demo) -> list[str]:
    """The labels of the demo's links (links() without their captions)."""
    return [demo.title] + ([QUICK_LABEL] if demo.quick else []) \
        + ([RECORDING_LABEL] if demo.recording and demo.recording in playback.list_recordings() else [])


def links(demo: Demo) -> list[tuple[str, dict[str, str], str]]:
    """(label, query, caption) of each link a demo offers: itself, its quick budget, its recording."""
    out = [(demo.title, demo.query, f"{demo.said()} *{duration(demo)}*")]
    if demo.quick:
        out.append((QUICK_LABEL, demo.quick_query(),
                    f"{demo.quick_caption} *{duration(demo, demo.quick_query())}*"))
    rec = shipped(demo)
    if rec is not None:
        out.append((RECORDING_LABEL, demo.recording_query(),
                    f"**Recording** {rec.made_on}: the full run, {speed.fmt_duration(rec.duration_s)} of training, "
                    f"replayed in {playback.FIT_S:.0f} s (or at 1x to 100x).{_ending(rec)}"))
    return out


def _ending(rec: playback.Recording) -> str:
    """How a twin recording ends, read from its records."""
    acc = {r.model.skip: (r.meta.get("final") or {}).get("test_accuracy") for r in rec.runs}
    if len(rec.runs) != 2 or not all(isinstance(a, float) for a in acc.values()):
        return ""
    return f" It ends with the residual net at {acc[True]:.0%} test accuracy, the plain twin at {acc[False]:.0%}."


def demo_links(container: Any = None, captions: bool = True) -> None:
    """A link per demo, each followed by what to notice; training demos also link their quick budget
    and their recording."""
    target = container if container is not None else st
    st.html(_WRAP_LABELS)
    for demo in DEMOS:
        for i, (label, query, caption) in enumerate(links(demo)):
            target.page_link(demo.page, label=label, query_params=query, help=None if captions else caption,
                             icon=(":material/play_circle:", ":material/timer:", ":material/movie:")[
                                 0 if i == 0 else 1 if label == QUICK_LABEL else 2])
            if captions:
                target.caption(caption)
