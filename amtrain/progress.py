"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.desc, self.n = total, desc, 0
        self.t0 = self._last = time.monotonic()

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and self.n < self.total):
            return
        self._last = now
        width = 30
        done = int(width * self.n / max(self.total, 1))
        rate = self.n / max(now - self.t0, 1e-9)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        self.stream.write(f"\r{self.desc} [{'#' * done}{'.' * (width - done)}] {self.n}/{self.total} "
                          f"{rate:.1f} it/s {extra}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
