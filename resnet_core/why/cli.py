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
