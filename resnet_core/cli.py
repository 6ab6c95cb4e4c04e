"""The command line: `python -m resnet_core describe|gradflow|train|bench ...`.

Every model field has a flag; flags override the preset. A bad flag or value
prints one line naming it and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .config import ACTIVATIONS, BLOCKS, INITS, PRESETS, SHORTCUTS, STEMS, STYLES, ConfigError, preset

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"resnet_core: error: {message}\n")
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
    if args.batch_size < 1 or args.batch_size > 1024:
        usage_error(f"--batch-size: {args.batch_size} is not allowed: 1 to 1024")
    result = gradflow(cfg, seed=args.seed, batch_size=args.batch_size).to_dict()
    emit(result, args.json, _gradflow_text)
    return 0


def _gradflow_text(d: dict[str, Any]) -> str:
    lines = ["activation gradient |dL/dh| at each block's output:"]
    lines += [f"  {b['name']:<12} {b['norm']:.3e}" for b in d["blocks"]]
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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("gradflow", help="gradient norms per block at initialisation")
    add_model_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_gradflow)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Later modules (train, bench) add their subcommands here without editing build_parser.
EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        usage_error(str(e))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
