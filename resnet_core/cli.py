"""The command line: `python -m resnet_core describe|gradflow|train|bench ...`.

Every model field has a flag; flags override the preset. A bad flag or value
prints one line naming it and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import ACTIVATIONS, BLOCKS, INITS, PRESETS, SHORTCUTS, STEMS, STYLES, ConfigError, preset

EXIT_USAGE = 2


def _one_line(message: str) -> str:
    # argparse echoes arguments as given: one holding a newline would split the error in two
    return message.replace("\r", "\\r").replace("\n", "\\n")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)}\n")


def usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"resnet_core: error: {_one_line(message)}\n")
    raise SystemExit(EXIT_USAGE)


def add_model_flags(p: argparse.ArgumentParser, default_preset: str = "resnet20") -> None:
    g = p.add_argument_group("model (each flag overrides the preset)")
    g.add_argument("--preset", default=default_preset, choices=list(PRESETS), metavar="NAME",
                   help="one of: " + ", ".join(PRESETS))
    g.add_argument("--blocks", dest="layers", metavar="N,N,..", help="blocks per stage, e.g. 2,2,2,2")
    g.add_argument("--widths", metavar="W,W,..", help="channels per stage, e.g. 64,128,256,512")
    g.add_argument("--block", choices=BLOCKS)
    g.add_argument("--stem", choices=STEMS)
    g.add_argument("--shortcut", choices=SHORTCUTS)
    g.add_argument("--skip", dest="skip", action="store_const", const=True, help="skip connections on")
    g.add_argument("--no-skip", dest="skip", action="store_const", const=False, help="plain net")
    g.add_argument("--bn", dest="batchnorm", action="store_const", const=True)
    g.add_argument("--no-bn", dest="batchnorm", action="store_const", const=False)
    g.add_argument("--activation", choices=ACTIVATIONS)
    g.add_argument("--style", choices=STYLES, help="post- or pre-activation blocks")
    g.add_argument("--init", choices=INITS)
    g.add_argument("--zero-init-residual", dest="zero_init_residual", action="store_const", const=True)
    g.add_argument("--in-channels", dest="in_channels", type=int, metavar="C")
    g.add_argument("--num-classes", dest="num_classes", type=int, metavar="K")
    g.add_argument("--image-size", dest="image_size", type=int, metavar="PX")


def add_limit_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """`--max-<name>` for each limit in `names`: overrides $RESNET_MAX_<NAME> for this command."""
    from .limits import ENV_PREFIX, LIMITS

    g = p.add_argument_group("limits (each defaults to its environment variable, else the value shown)")
    for name in names:
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=_limit_value, metavar="N",
                       help=f"default ${ENV_PREFIX}{name.upper()}, else {getattr(LIMITS, name):,}")


def _limit_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


MODEL_LIMITS = ("max_params", "max_sample_mb")  # what describe and gradflow build is checked against these
MODEL_FLAGS = {
    "layers": "--blocks", "widths": "--widths", "block": "--block", "stem": "--stem",
    "shortcut": "--shortcut", "skip": "--skip/--no-skip", "batchnorm": "--bn/--no-bn",
    "activation": "--activation", "style": "--style", "init": "--init",
    "zero_init_residual": "--zero-init-residual", "in_channels": "--in-channels",
    "num_classes": "--num-classes", "image_size": "--image-size",
}


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}


def model_from_args(args: argparse.Namespace, **defaults: Any):
    """The ModelConfig the flags describe; a bad value exits 2 naming its flag."""
    overrides = {**defaults, **model_overrides(args)}
    try:
        return preset(args.preset, **overrides)
    except ConfigError as e:
        flag = MODEL_FLAGS.get(e.field, "--" + e.field.replace("_", "-"))
        if getattr(e, "limit", None):  # too large: any model flag may be the cause; the limit has its own flag
            flag = "--" + e.limit.replace("_", "-")
        usage_error(f"{flag}: {e}")


def emit(obj: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(obj) if as_json else text(obj))


# ---------------------------------------------------------------- describe


def cmd_describe(args: argparse.Namespace) -> int:
    from .anatomy import describe

    cfg = model_from_args(args)
    result = describe(cfg).to_dict()
    emit(result, args.json, _describe_text)
    return 0


def _describe_text(d: dict[str, Any]) -> str:
    lines = [f"{'name':<24} {'kind':<22} {'in':<16} {'out':<16} {'params':>12} {'MFLOPs':>10}  shortcut"]
    for r in d["rows"]:
        lines.append(
            f"{r['name']:<24} {r['kind']:<22} {_shape(r['input_shape']):<16} {_shape(r['output_shape']):<16} "
            f"{r['params']:>12,} {r['flops'] / 1e6:>10.2f}  {r.get('shortcut') or ''}"
        )
    lines.append(f"total parameters: {d['total_params']:,}")
    lines.append(f"total FLOPs: {d['total_flops']:,} (one image)")
    lines.append(f"layers: {d['layer_count_expression']}")
    return "\n".join(lines)


def _shape(s: Sequence[int] | None) -> str:
    return "x".join(map(str, s)) if s else "-"


# ---------------------------------------------------------------- gradflow


def cmd_gradflow(args: argparse.Namespace) -> int:
    from .probe import gradflow

    cfg = model_from_args(args, in_channels=1, image_size=28)
    if args.batch_size < 1 or args.batch_size > args.limits.max_batch_size:
        usage_error(f"--batch-size: {args.batch_size} is not allowed: 1 to {args.limits.max_batch_size} "
                    "(limit max_batch_size, env RESNET_MAX_BATCH_SIZE)")
    result = gradflow(cfg, seed=args.seed, batch_size=args.batch_size, split=args.split).to_dict()
    emit(result, args.json, _gradflow_text)
    return 0


def _gradflow_text(d: dict[str, Any]) -> str:
    lines = ["activation gradient |dL/dh| at each block's output:"]
    lines += [f"  {b['name']:<12} {b['norm']:.3e}" + (f"   shortcut {b['shortcut']:.3e}  branch {b['branch']:.3e}"
                                                    if "shortcut" in b else "") for b in d["blocks"]]
    lines.append("weight gradient |dL/dW| of each layer:")
    lines += [f"  {r['name']:<28} {r['norm']:.3e}" for r in d["layers"]]
    lines.append(f"first block / last block: {d['ratio']:.3g}")
    return "\n".join(lines)


# ---------------------------------------------------------------- entry point


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m resnet_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("describe", help="per-block anatomy: shapes, parameters, FLOPs")
    add_model_flags(p)
    add_limit_flags(p, MODEL_LIMITS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("gradflow", help="gradient norms per block at initialisation")
    add_model_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--split", action="store_true",
                   help="also the gradient's parts through each block's shortcut and branch")
    add_limit_flags(p, (*MODEL_LIMITS, "max_batch_size"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_gradflow)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Later modules (train, bench) add their subcommands here without editing build_parser.
EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    from .limits import NAMES, applied, from_env

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # limits first: a model is checked against them while its flags are read
        args.limits = from_env(**{n: getattr(args, n) for n in NAMES if getattr(args, n, None) is not None})
    except ValueError as e:  # a malformed RESNET_* variable
        usage_error(str(e))
    try:
        with applied(args.limits):
            return args.func(args)
    except ConfigError as e:
        usage_error(str(e))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


# ---------------------------------------------------------------- train

TRAIN_FLAGS = {
    "dataset": "--dataset", "steps": "--steps", "batch_size": "--batch-size", "optimizer": "--optimizer",
    "lr": "--lr", "momentum": "--momentum", "nesterov": "--nesterov/--no-nesterov",
    "schedule": "--schedule", "weight_decay": "--weight-decay", "seed": "--seed", "device": "--device",
    "log_every": "--log-every", "eval_every": "--eval-every", "amp": "--amp", "channels_last": "--channels-last",
}
LIMIT_FLAGS = {"max_steps": "--steps", "max_batch_size": "--batch-size", "max_train_memory_mb": "--batch-size",
               "max_params": "--max-params", "max_sample_mb": "--max-sample-mb"}
TRAIN_LIMITS = (*MODEL_LIMITS, "max_steps", "max_batch_size", "max_train_memory_mb", "max_download_mb")


def _register_train(sub: Any) -> None:
    from .config import AMP_MODES, DATASETS, OPTIMIZERS, SCHEDULES, SWITCHES, TRAIN_DEVICES

    p = sub.add_parser("train", help="train a net and write a run record")
    add_model_flags(p)
    g = p.add_argument_group("training (defaults: TrainConfig)")
    g.add_argument("--dataset", choices=DATASETS, help="input channels, image size and classes follow it")
    g.add_argument("--steps", type=int)
    g.add_argument("--batch-size", dest="batch_size", type=int)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", dest="nesterov", action="store_const", const=True)
    g.add_argument("--no-nesterov", dest="nesterov", action="store_const", const=False)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--weight-decay", dest="weight_decay", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=TRAIN_DEVICES)
    g.add_argument("--log-every", dest="log_every", type=int)
    g.add_argument("--eval-every", dest="eval_every", type=int)
    g.add_argument("--amp", choices=AMP_MODES)
    g.add_argument("--channels-last", dest="channels_last", choices=SWITCHES)
    o = p.add_argument_group("output and limits")
    o.add_argument("--out", metavar="DIR", help="runs folder (default $RESNET_RUNS_DIR, else ./runs)")
    o.add_argument("--label", default="", help="a name for the run")
    o.add_argument("--data-root", dest="data_root", metavar="DIR", help="default $RESNET_DATA_DIR")
    o.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="train as a Ray actor on the cluster at ADDRESS, e.g. 10.0.0.5:6379 "
                        "(default $RESNET_RAY_ADDRESS; needs pip install -r requirements-ray.txt)")
    add_limit_flags(p, TRAIN_LIMITS)
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    p.set_defaults(func=cmd_train)


class _ProgressBar:
    """tqdm on stderr, advanced by train()'s on_log rows."""

    def __init__(self, steps: int, enabled: bool):
        self.steps, self.enabled, self.test = steps, enabled, ""

    def on_start(self, info: dict[str, Any]) -> None:  # not before: a missing dataset shows no empty bar
        from tqdm import tqdm

        self.bar = tqdm(total=self.steps, file=sys.stderr, disable=not self.enabled, unit="step",
                        dynamic_ncols=True)

    def on_log(self, row: dict[str, Any]) -> None:
        self.bar.set_postfix_str(f"loss {row['loss']:.3f} acc {row['accuracy']:.3f}{self.test}", refresh=False)
        self.bar.update(row["step"] - self.bar.n)

    def on_eval(self, row: dict[str, Any]) -> None:
        self.test = f" test {row['accuracy']:.3f}"

    def on_end(self, result: Any) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


def cmd_train(args: argparse.Namespace) -> int:
    from . import device as devices
    from .config import TrainConfig, make_train_config
    from .limits import LimitError
    from .recorder import RunWriter
    from .train import DATASET_SHAPES, check_limits, train

    dataset = args.dataset or TrainConfig.dataset
    c, s, k = DATASET_SHAPES[dataset]
    model_cfg = model_from_args(args, in_channels=c, image_size=s, num_classes=k)
    values = {f: getattr(args, f) for f in TRAIN_FLAGS if getattr(args, f, None) is not None}
    limits = args.limits
    address = args.ray if args.ray is not None else os.environ.get("RESNET_RAY_ADDRESS", "")
    try:
        train_cfg = make_train_config(None, limits=limits, **values)
        check_limits(model_cfg, train_cfg, limits)
        # on Ray the cluster's devices count, not this machine's: the job manager checks them there
        dev = None if address else devices.resolve(train_cfg.device)
    except LimitError as e:  # first: a model beyond max_params is a ConfigError too
        usage_error(f"{LIMIT_FLAGS.get(e.limit, '--' + e.limit.replace('_', '-'))}: {e}")
    except ConfigError as e:
        usage_error(f"{TRAIN_FLAGS.get(e.field, '--' + e.field.replace('_', '-'))}: {e}")
    except ValueError as e:  # an unavailable device
        usage_error(f"{'--device: ' if 'device' in str(e) else ''}{e}")
    if address:
        return _train_on_ray(args, address, model_cfg, train_cfg)
    from .data import DatasetUnavailable

    writer = RunWriter(model_cfg, train_cfg, root=args.out, label=args.label)
    bar = _ProgressBar(train_cfg.steps, not args.quiet)
    try:
        result = train(model_cfg, train_cfg, [writer, bar], device=dev, limits=limits, data_root=args.data_root,
                       download=args.download, progress=lambda m: sys.stderr.write(m + "\n"))
    except DatasetUnavailable as e:
        sys.stderr.write(f"resnet_core: {e}\n")
        return 1

    return _report(args, str(writer.run_dir), result)


def _report(args: argparse.Namespace, run_dir: str, result: Any) -> int:
    import math

    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    out = {"run_dir": run_dir, "status": result.status, "message": result.message,
           "final_train_loss": num(result.train_loss), "final_train_accuracy": num(result.train_accuracy),
           "test_loss": num(result.test_loss), "test_accuracy": num(result.test_accuracy), "steps": result.step,
           "samples_per_s": num(result.samples_per_s), "seconds": result.seconds, "device": result.device}
    emit(out, args.json, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0 if result.status == "finished" else 1


def _train_on_ray(args: argparse.Namespace, address: str, model_cfg: Any, train_cfg: Any) -> int:
    """`train --ray`: the one job runs as a Ray actor, through a JobManager as the app's jobs do, so
    this process writes the record from what the actor streams."""
    import time

    from .jobs import JobManager
    from .loop import TrainResult

    try:
        from .jobs.ray_backend import RayBackend

        backend = RayBackend(address)
    except (ImportError, ConnectionError) as e:
        sys.stderr.write(f"resnet_core: {_one_line(str(e))}\n")
        return 1
    manager = JobManager(root=args.out, limits=args.limits, max_running=1, backend=backend)
    try:
        manager.check_device(train_cfg.device)
    except ValueError as e:  # e.g. --device cuda on a cluster without GPUs
        manager.shutdown()
        usage_error(f"--device: {e}")
    bar = _ProgressBar(train_cfg.steps, not args.quiet)
    try:
        job = manager.get(manager.submit(model_cfg, train_cfg, owner="cli", label=args.label,
                                         data_root=args.data_root, download=args.download))
        cursor, t0, said = None, time.monotonic(), args.quiet
        try:
            while True:
                done = job.done  # read before the rows: the last rows come before the state changes
                metrics, _, cursor = job.since(cursor)
                if not job.layers and not said and time.monotonic() - t0 > 10:
                    said = True  # e.g. every node's CPUs are taken
                    sys.stderr.write(f"resnet_core: waiting for the Ray cluster at {address} to start the job "
                                     "(it asks for 1 CPU, or 1 GPU on cuda)\n")
                if job.layers and not hasattr(bar, "bar"):
                    bar.on_start({})
                for row in metrics.to_dict("records"):
                    if hasattr(bar, "bar"):
                        (bar.on_eval if row["split"] == "test" else bar.on_log)(row)
                if done:
                    break
                time.sleep(0.2)
        except KeyboardInterrupt:
            job.stop("interrupted (Ctrl-C)")
            raise
        final = {}
        if job.run_dir:
            final = json.loads((Path(job.run_dir) / "config.json").read_text()).get("final", {})
        nan = float("nan")
        result = TrainResult(job.state, job.message, job.step, train_cfg.steps, job.device,
                             *(nan if final.get(k) is None else final[k]
                               for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")),
                             seconds=final.get("seconds") or job.seconds,
                             samples_per_s=nan if final.get("samples_per_s") is None else final["samples_per_s"])
        bar.on_end(result)
    finally:
        manager.shutdown()
    return _report(args, job.run_dir, result)


EXTRA_COMMANDS.append(_register_train)


# ---------------------------------------------------------------- evaluate (inspect/cli.py)

from .inspect.cli import register as _register_evaluate  # noqa: E402 - after the helpers it uses

EXTRA_COMMANDS.append(_register_evaluate)

# ---------------------------------------------------------------- why residual nets work (why/cli.py)

from .why.cli import register_landscape, register_lesion, register_paths  # noqa: E402 - after the helpers

EXTRA_COMMANDS.extend([register_paths, register_lesion, register_landscape])
