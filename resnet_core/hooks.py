"""Module hooks held as a context manager: what the probe and the "why" measurements share.

A subclass registers its hooks in `attach()` through `self.keep(handle)`; entering attaches them
(all or none: a failure part-way removes those already registered), leaving removes them, and
`attached` says whether they are on now (a hook left behind on a shared model would go on
recording after its owner is gone).
"""

from __future__ import annotations

from typing import Any, Self


class Hooks:
    def __init__(self) -> None:
        self._handles: list[Any] = []

    def attach(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def keep(self, handle: Any) -> None:
        """Keep a handle returned by register_forward_hook / register_forward_pre_hook."""
        self._handles.append(handle)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> Self:
        try:
            self.attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
