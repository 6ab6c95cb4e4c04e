"""`python -m resnet_core paths|lesion|landscape ...`: the analyses of why residual nets work.

Registered by cli.py; imports nothing heavy until a command runs. A bad flag, a record without
weights or a net an analysis cannot take prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _emit(d: dict, as_json: bool, text: str) -> None:
    print(json.dumps(d) if as_json else text)


def register_paths(sub: Any) -> None:
    from ..cli import MODEL_LIMITS, add_limit_flags, add_model_flags

    p = sub.add_parser("paths", help="path lengths (Veit et al. 2016): gradient carried by paths of each length")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run record's folder (default: a preset at init)")
    add_model_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=1, help="random paths measured per length")
    p.add_argument("--data-root", dest="data_root", metavar="DIR", help="for RUN_DIR: default $RESNET_DATA_DIR")
    add_limit_flags(p, (*MODEL_LIMITS, "max_batch_size"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_paths)


def run_paths(args: argparse.Namespace) -> int:
    import torch

    from ..cli import model_from_args, usage_error
    from .paths import at_init, path_lengths

    if not 1 <= args.batch_size <= args.limits.max_batch_size:
        usage_error(f"--batch-size: {args.batch_size} is not allowed: 1 to {args.limits.max_batch_size}")
    if not 1 <= args.samples <= 100:
        usage_error(f"--samples: {args.samples} is not allowed: 1 to 100")
    try:
        if args.run_dir:
            from ..data import DatasetUnavailable
            from ..weights import WeightsError
            from .common import record_data, record_net

            try:
                model, rec = record_net(args.run_dir)
                x, y = record_data(rec, "train", limit=args.batch_size, seed=args.seed, data_root=args.data_root)
            except (WeightsError, DatasetUnavailable) as e:
                usage_error(f"{args.run_dir}: {e}")
            with torch.enable_grad():
                result = path_lengths(model, rec.model, x, y, samples=args.samples, seed=args.seed,
                                      source=str(args.run_dir))
        else:
            cfg = model_from_args(args, in_channels=1, image_size=28)
            result = at_init(cfg, seed=args.seed, batch_size=args.batch_size, samples=args.samples)
    except ValueError as e:  # a plain net: one path only
        usage_error(str(e))
    d = result.to_dict()
    a, b = result.central(0.9)
    text = "\n".join([f"{'k':>4} {'paths':>22} {'|gradient| of one':>18} {'count x gradient':>18}"]
                     + [f"{k:>4} {c:>22,} {g:>18.3e} {t:>18.3e}"
                        for k, c, g, t in zip(d["lengths"], d["count"], d["gradient"], d["total"], strict=True)]
                     + [f"90% of the total gradient comes from paths of length {a} to {b} "
                        f"(of {len(d['lengths']) - 1} blocks)"])
    _emit(d, args.json, text)
    return 0


def _record_errors():
    from ..data import DatasetUnavailable
    from ..weights import WeightsError

    return (WeightsError, DatasetUnavailable)


def register_lesion(sub: Any) -> None:
    p = sub.add_parser("lesion", help="lesion study (Veit et al. 2016): test accuracy with blocks deleted")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run record's folder (with its weights)")
    p.add_argument("--draws", type=int, default=3, help="seeded random draws for each k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test images")
    p.add_argument("--data-root", dest="data_root", metavar="DIR", help="default $RESNET_DATA_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_lesion)


def run_lesion(args: argparse.Namespace) -> int:
    from ..cli import usage_error
    from .lesion import lesion_run

    if not 1 <= args.draws <= 100:
        usage_error(f"--draws: {args.draws} is not allowed: 1 to 100")
    if args.limit is not None and args.limit < 1:
        usage_error(f"--limit: {args.limit} is not allowed: a whole number >= 1")
    try:
        result, rec = lesion_run(args.run_dir, draws=args.draws, seed=args.seed, limit=args.limit,
                                 data_root=args.data_root)
    except _record_errors() as e:
        usage_error(f"{args.run_dir}: {e}")
    d = {"run_dir": str(args.run_dir), "recorded_test_accuracy": rec.meta.get("final", {}).get("test_accuracy"),
         **result.to_dict()}
    lines = [f"no block deleted: accuracy {d['baseline_accuracy']:.4f} on {d['images']:,} test images"]
    lines += [f"  delete {b['name']:<10} " + (f"{b['accuracy']:.4f}" if b["removable"] else "cannot be deleted "
                                               "(it changes the shape and has no shortcut)") for b in d["blocks"]]
    lines += [f"  delete {r['k']:>3} at random: mean {r['mean_accuracy']:.4f}" for r in d["random"]]
    _emit(d, args.json, "\n".join(lines))
    return 0


def register_landscape(sub: Any) -> None:
    p = sub.add_parser("landscape", help="loss landscape (Li et al. 2018) around a run's trained weights")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run record's folder (with its weights)")
    p.add_argument("--grid", type=int, default=21, help="N: an N x N grid, N odd")
    p.add_argument("--samples", type=int, default=512, help="M training images, a fixed seeded subset")
    p.add_argument("--seed", type=int, default=0, help="seeds the directions and the subset")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="compute even if cached in the record")
    p.add_argument("--data-root", dest="data_root", metavar="DIR", help="default $RESNET_DATA_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_landscape)


def run_landscape(args: argparse.Namespace) -> int:
    import sys

    from ..cli import usage_error
    from .landscape import landscape_run

    last = [-1]

    def progress(f: float) -> None:
        pct = int(f * 100)
        if not args.quiet and pct // 10 != last[0] // 10:
            sys.stderr.write(f"landscape: {pct}%\n")
        last[0] = pct

    try:
        result = landscape_run(args.run_dir, grid=args.grid, samples=args.samples, seed=args.seed,
                               data_root=args.data_root, use_cache=args.cache, progress=progress)
    except _record_errors() as e:
        usage_error(f"{args.run_dir}: {e}")
    except ValueError as e:
        usage_error(f"--{'grid' if 'grid' in str(e) else 'samples'}: {e}")
    d = {"run_dir": str(args.run_dir), **result.to_dict()}
    c = result.centre
    text = (f"{len(d['alphas'])} x {len(d['betas'])} grid, alpha and beta from {d['alphas'][0]:g} to "
            f"{d['alphas'][-1]:g}; loss at the trained weights {c:.4f}, largest on the grid "
            f"{max(max(r) for r in d['loss']):.4f}")
    _emit(d, args.json, text)
    return 0
