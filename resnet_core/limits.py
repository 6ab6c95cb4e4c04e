"""Server-wide limits: each has a default, an environment variable and a clear message.

A classroom server is shared, so every request is checked against these before
any work starts. `LIMITS` is read from the environment once at import; tests and
the CLI build their own `Limits` with `from_env(overrides)`.

Model validation (config.validate) runs deep inside constructors that take no
limits argument, so it reads `active()`: `LIMITS`, unless a caller such as the
CLI with `--max-params` has entered `applied(limits)` (a context variable, so it
holds for that call alone and never leaks into other threads).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace


class LimitError(ValueError):
    """A request beyond a server limit: names the limit, its value and how to change it."""

    def __init__(self, limit: str, asked: object, allowed: object, unit: str = ""):
        self.limit = limit
        env = ENV_PREFIX + limit.upper()
        super().__init__(
            f"limit {limit} is {allowed}{unit}; this request needs {asked}{unit} "
            f"(raise it with the environment variable {env})"
        )


ENV_PREFIX = "RESNET_"


@dataclass(frozen=True)
class Limits:
    max_params: int = 100_000_000  # largest model, in parameters
    max_sample_mb: int = 2048  # activations of one image through the net, forward only
    max_train_memory_mb: int = 4096  # estimated training memory for the chosen batch
    max_steps: int = 20_000  # most optimisation steps in one run
    max_batch_size: int = 1024  # largest batch
    max_running_jobs: int = 0  # jobs training at once; 0 = 1 per GPU, else 1
    max_queued_per_session: int = 3  # jobs waiting per browser session
    max_queued_total: int = 40  # jobs waiting in all
    max_upload_mb: int = 50  # largest uploaded run-record zip
    max_download_mb: int = 500  # largest dataset download into the data root


def from_env(env: dict[str, str] | None = None, **overrides: int) -> Limits:
    """Limits from `RESNET_<NAME>` variables, then explicit overrides (CLI flags)."""
    env = os.environ if env is None else env
    values: dict[str, int] = {}
    for f in fields(Limits):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(
                f"environment variable {ENV_PREFIX + f.name.upper()}={raw!r} must be a whole number"
            ) from None
        if value < 0:
            raise ValueError(f"environment variable {ENV_PREFIX + f.name.upper()}={raw!r} must be >= 0")
        values[f.name] = value
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"limit {name} must be a whole number >= 0, not {value!r}")
        values[name] = value
    return replace(Limits(), **values)


def _from_env_at_import() -> Limits:
    # A malformed variable must not make every import (the server, the CLI) die with a
    # traceback: it is logged here, and the CLI, which reads the variables again, refuses it.
    try:
        return from_env()
    except ValueError as e:
        logging.getLogger(__name__).error("%s; using the default limits", e)
        return Limits()


def env_float(name: str, default: float, lo: float = 0.0, hi: float = 1e7, zero_ok: bool = False,
              env: dict[str, str] | None = None) -> float:
    """A setting in seconds (or a count) from the environment variable `name`: `default` when it is
    unset, not a number, or outside lo < value <= hi (lo <= value with `zero_ok`). Used for the
    timings of the server and its workers, where a bad value must not stop a class: the default holds."""
    raw = (os.environ if env is None else env).get(name, "")
    try:
        value = float(raw)
    except ValueError:
        return default
    above = value >= lo if zero_ok else value > lo
    return value if above and value <= hi else default


LIMITS = _from_env_at_import()
NAMES = tuple(f.name for f in fields(Limits))
_ACTIVE: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("resnet_limits", default=None)


def active() -> Limits:
    """The limits model validation uses now: `LIMITS`, or those of an enclosing `applied()`."""
    return _ACTIVE.get() or LIMITS


@contextlib.contextmanager
def applied(limits: Limits) -> Iterator[Limits]:
    """Validate models against `limits` inside the block (the CLI's --max-params, a test's)."""
    token = _ACTIVE.set(limits)
    try:
        yield limits
    finally:
        _ACTIVE.reset(token)
