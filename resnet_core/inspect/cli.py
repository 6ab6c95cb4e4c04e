"""`python -m resnet_core evaluate RUN_DIR [--json]`: a record's trained net on its test split.

Registered by cli.py; imports nothing heavy until it runs. Refused or missing weights, a damaged
record or a dataset that is not here print one line saying why and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="a run's trained net on its test split: accuracy and per-class figures")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run record's folder")
    p.add_argument("--device", help="default: the device the run trained on if this machine has it, else cpu")
    p.add_argument("--data-root", dest="data_root", metavar="DIR", help="default $RESNET_DATA_DIR")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test images")
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import usage_error
    from ..data import DatasetUnavailable
    from ..weights import WeightsError
    from .evaluate import evaluate_run

    if args.limit is not None and args.limit < 1:
        usage_error(f"--limit: {args.limit} is not allowed: a whole number >= 1")
    try:
        ev = evaluate_run(args.run_dir, device=args.device, limit=args.limit, data_root=args.data_root)
    except (WeightsError, DatasetUnavailable) as e:
        usage_error(f"{args.run_dir}: {e}")
    except (ValueError, RuntimeError) as e:  # an unknown or absent --device
        usage_error(f"--device: {str(e).splitlines()[0][:300]}" if args.device else str(e)[:300])
    d = {"run_dir": str(args.run_dir), **ev.to_dict()}
    if args.json:
        print(json.dumps(d))
    else:
        print(_text(d))
    return 0


def _text(d: dict) -> str:
    rec = d["recorded_test_accuracy"]
    lines = [f"test accuracy {d['test_accuracy']:.4f} on {d['images']:,} test images ({d['device']})"
             + (f"; the record says {rec:.4f}" if rec is not None else ""),
             f"{'class':<14} {'images':>7} {'right':>7} {'accuracy':>9} {'precision':>10}"]
    for r in d["per_class"]:
        acc, prec = (f"{v:.4f}" if v is not None and not math.isnan(v) else "-" for v in (r["accuracy"],
                                                                                         r["precision"]))
        lines.append(f"{r['name'][:14]:<14} {r['count']:>7} {r['correct']:>7} {acc:>9} {prec:>10}")
    return "\n".join(lines)
