"""The oneDNN heap corruption (torch 2.14.1, oneDNN 3.12) in a 1x1 stride-2 conv's backward: the repro and a sweep.

Each case runs in a child process of its own (a heap corruption kills the process that hits it):

    python bench/onednn_bug.py                 # the sweep: which kernel, stride, channels, size, threads, ISA
    python bench/onednn_bug.py --case 1 2 4 8 8 1 cl both   # one case: k stride cin cout hw threads layout grad

A case trains `iters` backward passes of one Conv2d (no bias) on random (32, cin, hw, hw) inputs and also
checks the gradients against a float64 contiguous reference, so a wrong result is seen even where the
corruption does not crash. It prints "ok", "wrong" (gradients off) or dies (the parent reports the signal).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys


def run_case(k: int, stride: int, cin: int, cout: int, hw: int, threads: int, layout: str, grad: str,
             iters: int = 300) -> str:
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    m = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False).to(memory_format=fmt)
    m.weight.requires_grad_(grad in ("both", "weight"))
    ref = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False).double()
    ref.load_state_dict({"weight": m.weight.detach().double()})
    wrong = 0
    for i in range(iters):
        x = torch.randn(32, cin, hw, hw).contiguous(memory_format=fmt).requires_grad_(grad in ("both", "input"))
        if grad == "none":
            with torch.no_grad():
                m(x)
            continue
        m.zero_grad()
        m(x).square().mean().backward()
        if i % 50 == 0:  # the same pass in float64, contiguous: the oracle
            xr = x.detach().double().contiguous().requires_grad_(x.requires_grad)
            ref.zero_grad()
            ref(xr).square().mean().backward()
            if x.requires_grad and not torch.allclose(x.grad.double(), xr.grad, rtol=1e-3, atol=1e-6):
                wrong += 1
            if m.weight.requires_grad and not torch.allclose(m.weight.grad.double(), ref.weight.grad,
                                                             rtol=1e-3, atol=1e-6):
                wrong += 1
    return "wrong" if wrong else "ok"


def child(case: list[str], isa: str | None, iters: int) -> str:
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    p = subprocess.run([sys.executable, __file__, "--iters", str(iters), "--case", *case], env=env,
                       capture_output=True, text=True, timeout=300)
    if p.returncode < 0:
        return f"CRASH {signal.Signals(-p.returncode).name}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return f"CRASH rc={p.returncode} ({last[:60]})"
    return p.stdout.strip().splitlines()[-1]


def sweep(iters: int) -> None:
    base = dict(k=1, stride=2, cin=4, cout=8, hw=8, threads=1, layout="cl", grad="both")
    axes = {
        "isa": [None, "AVX2", "AVX", "SSE41"],
        "k": [1, 3],
        "stride": [1, 2],
        "cin": [1, 2, 3, 4, 5, 6, 7, 8, 12, 16],
        "cout": [4, 8, 16, 64],
        "hw": [4, 7, 8, 14, 16, 28, 32],
        "threads": [1, 2],
        "layout": ["cl", "contiguous"],
        "grad": ["none", "input", "weight", "both"],
    }
    keys = ["k", "stride", "cin", "cout", "hw", "threads", "layout", "grad"]
    print(f"one axis at a time around {base} (isa: default), {iters} passes each")
    for axis, values in axes.items():
        for v in values:
            case, isa = dict(base), None
            if axis == "isa":
                isa = v
            else:
                case[axis] = v
            res = child([str(case[k]) for k in keys], isa, iters)
            print(f"  {axis:8s}= {str(v):11s} -> {res}", flush=True)
    print("channels x stride-2 1x1, both ISAs, layout cl, 1 thread")
    for cin, isa in itertools.product([2, 4, 8, 16], [None, "AVX2"]):
        case = dict(base, cin=cin)
        print(f"  cin={cin:2d} isa={isa or 'default':7s} -> {child([str(case[k]) for k in keys], isa, iters)}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=8, metavar="X", help="k stride cin cout hw threads layout(cl|contiguous) "
                    "grad(none|input|weight|both)")
    ap.add_argument("--iters", type=int, default=300)
    a = ap.parse_args()
    if a.case:
        k, stride, cin, cout, hw, threads = (int(v) for v in a.case[:6])
        print(run_case(k, stride, cin, cout, hw, threads, a.case[6], a.case[7], a.iters))
        return
    import torch

    dnn = next((line.strip() for line in torch.__config__.show().splitlines() if "MKL-DNN" in line), "oneDNN ?")
    print(f"torch {torch.__version__}; {dnn}")
    sweep(a.iters)


if __name__ == "__main__":
    main()
