"""How long the Architecture page's work takes: describe() cold and warm, and a page rerun.

1. `describe(resnet152 at 224x224)`, cold (lru cache cleared) and warm (cached), median of
   `--repeats` runs each. Target: cold well under 2 s on a 2-core CPU.
2. The Architecture page through AppTest on ResNet-50: the server time of `at.run()` after a
   widget change that makes a net not seen before (BatchNorm, shortcut, activation, style,
   skip...), and after one that returns to a net already seen. Target: under 0.5 s.

    python bench/bench_describe.py [--repeats 5] [--app app.py]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_core.anatomy import describe  # noqa: E402
from resnet_core.config import preset  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_describe(repeats: int) -> None:
    cfg = preset("resnet152")
    describe(preset("resnet20"))  # imports and first-call setup out of the way
    cold = []
    for _ in range(repeats):
        describe.cache_clear()
        cold.append(timed(lambda: describe(cfg)))
    warm = [timed(lambda: describe(cfg)) for _ in range(repeats)]
    print(f"describe(resnet152, 224x224): cold median {statistics.median(cold):.3f} s "
          f"(min {min(cold):.3f}, max {max(cold):.3f}); warm median {statistics.median(warm) * 1e6:.1f} us")


# (widget kind, key, value): each makes a ResNet-50 variant the page has not drawn yet.
NEW_NETS = [
    ("toggle", "arch_batchnorm", False),
    ("radio", "arch_shortcut", "C"),
    ("selectbox", "arch_activation", "gelu"),
    ("selectbox", "arch_style", "pre"),
    ("toggle", "arch_skip", False),
    ("toggle", "arch_zero_init_residual", True),
]


def bench_page(app: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(app), default_timeout=120)
    at.switch_page("pages/architecture.py")
    first = timed(at.run)
    at.selectbox(key="arch_preset").set_value("resnet50")
    to_r50 = timed(at.run)
    assert not at.exception, [e.value for e in at.exception]
    new, seen = [], []
    for kind, key, value in NEW_NETS:
        widget = getattr(at, kind)(key=key)
        old = widget.value
        widget.set_value(value)
        new.append(timed(at.run))
        getattr(at, kind)(key=key).set_value(old)  # back to ResNet-50: a net already drawn
        seen.append(timed(at.run))
        assert not at.exception, [e.value for e in at.exception]
    print(f"page first run (imports included): {first:.2f} s; switch to resnet50: {to_r50:.3f} s")
    print(f"rerun after a widget change, resnet50, new net: median {statistics.median(new):.3f} s "
          f"(max {max(new):.3f}, n={len(new)})")
    print(f"rerun after a widget change, resnet50, net seen before: median {statistics.median(seen):.3f} s "
          f"(max {max(seen):.3f}, n={len(seen)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--app", type=Path, default=ROOT / "app.py", help="entry script for AppTest")
    args = ap.parse_args()
    bench_describe(args.repeats)
    bench_page(args.app.resolve())


if __name__ == "__main__":
    main()
