"""Two helper threads with half of torch's threads each (why/cores.py): every item once, errors and stops
reach the caller, and no other thread's torch thread count changes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from resnet_core.why.cores import across_cores, helpers_for


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_every_item_once_by_the_helper_whose_turn_it_is_with_its_own_thread_count(two_threads):
    seen = {}

    def work(h, k):
        seen[k] = (h, torch.get_num_threads(), threading.current_thread().name)
        return k * k

    got = dict(across_cores(9, work, helpers=2))
    assert got == {k: k * k for k in range(9)}
    assert {k: h for k, (h, _, _) in seen.items()} == {k: k % 2 for k in range(9)}
    assert {n for _, n, _ in seen.values()} == {1}  # half of the caller's 2 threads each
    assert {name for _, _, name in seen.values()} == {"cores-0", "cores-1"}
    assert torch.get_num_threads() == 2  # the caller's own count stays
    fresh = {}
    t = threading.Thread(target=lambda: fresh.setdefault("n", torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh["n"] == 2  # and so does the default a new thread starts with


def test_one_helper_is_the_caller_in_order(two_threads):
    names = []
    out = list(across_cores(4, lambda h, k: names.append(threading.current_thread().name) or k, helpers=1))
    assert out == [(0, 0), (1, 1), (2, 2), (3, 3)] and set(names) == {threading.current_thread().name}
    assert helpers_for("cpu") == 2 and helpers_for("meta") == 1
    torch.set_num_threads(1)
    assert helpers_for("cpu") == 1


def test_an_error_or_a_stop_reaches_the_caller_and_the_helpers_end(two_threads):
    def work(h, k):
        if k == 3:
            raise ValueError("item 3 is bad")
        return k

    with pytest.raises(ValueError, match="item 3"):
        list(across_cores(8, work, helpers=2))
    calls = []
    with pytest.raises(InterruptedError):
        list(across_cores(50, lambda h, k: calls.append(time.sleep(0.01)), helpers=2,
                          should_stop=lambda: len(calls) >= 3))
    assert len(calls) < 50  # the helpers stopped early
    assert not [t for t in threading.enumerate() if t.name.startswith("cores-")]  # and are gone
