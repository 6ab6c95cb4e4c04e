"""Server-wide limits: each has a default, an environment variable and a clear message.

A classroom server is shared, so every request is checked against these before
any work starts. `LIMITS` is read from the environment once at import; tests and
the CLI build their own `Limits` with `from_env(overrides)`.
"""

from __future__ import annotations

import os
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
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(Limits(), **values)


LIMITS = from_env()
