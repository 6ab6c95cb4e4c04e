"""Many small evaluations on a CPU, shared by two threads with half of torch's threads each.

On 2 cores, two 1-thread forward passes side by side beat one 2-thread pass by 13-17 %
(bench/RESULTS.md): a small conv split over two threads spends much of its time waiting for the
other half. The analyses that evaluate a net many times (the landscape's grid points, the lesion
study's batches) hand their items to `across_cores`.

OpenMP keeps a thread count per thread, so each helper sets its own; the shared default that new
threads start from is put back at once, and the caller's and every other thread's count stay as they were.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
HELPERS = 2


def helpers_for(device: torch.device | str) -> int:
    """How many helpers `across_cores` uses: 2 on a CPU with 2 or more torch threads, else 1 (the caller)."""
    return HELPERS if torch.device(device).type == "cpu" and torch.get_num_threads() >= HELPERS else 1


def across_cores(count: int, work: Callable[[int, int], T], helpers: int,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, T]]:
    """(k, work(helper, k)) for each k in range(count), in the order they finish. Helper h takes
    k = h, h + helpers, …; with one helper the caller's thread does it all, in order.
    An exception in a helper is raised here; `should_stop` raises InterruptedError between items."""
    def stop() -> None:
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped")

    if helpers <= 1:
        for k in range(count):
            stop()
            yield k, work(0, k)
        return
    outer = torch.get_num_threads()
    results: queue.Queue[tuple[int, T] | BaseException] = queue.Queue()
    halt = threading.Event()
    ready = threading.Barrier(helpers + 1)

    def run(h: int) -> None:
        try:
            torch.get_num_threads()  # a thread takes the shared default at its first use of torch: now
            torch.set_num_threads(max(1, outer // helpers))  # then its own
            ready.wait()
            with torch.no_grad():
                for k in range(h, count, helpers):
                    if halt.is_set():
                        return
                    results.put((k, work(h, k)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
            results.put(e)

    threads = [threading.Thread(target=run, args=(h,), name=f"cores-{h}", daemon=True) for h in range(helpers)]
    for t in threads:
        t.start()
    try:
        ready.wait()
        torch.set_num_threads(outer)  # the shared default, as it was
        for _ in range(count):
            got = results.get()
            if isinstance(got, BaseException):
                raise got
            yield got
            stop()
    finally:
        halt.set()
        for t in threads:
            t.join()
