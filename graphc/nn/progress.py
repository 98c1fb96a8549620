"""Keras-style progress output for fit/evaluate.

verbose=1: a bar per epoch, redrawn in place on a terminal (on a pipe or file only the
finished bar is written, so logs stay readable); verbose=2: one line per epoch; 0: silent.
"""
from __future__ import annotations

import sys
import time


def _fmt_value(v) -> str:
    if hasattr(v, "__len__"):  # a per-class metric (F1Score(average=None)): its values in brackets
        return "[" + " ".join(_fmt_value(float(x)) for x in v) + "]"
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


def _fmt_logs(logs: dict) -> str:
    return "".join(f" - {k}: {_fmt_value(v)}" for k, v in logs.items())


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms"
    return f"{seconds * 1e6:.0f}us"


class Progbar:
    def __init__(self, target: int, verbose: int = 1, width: int = 30, stream=None, interval: float = 0.05):
        self.target, self.verbose, self.width, self.interval = int(target), verbose, width, interval
        self.stream = stream if stream is not None else sys.stdout
        self.dynamic = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_len = 0

    def _bar(self, current: int) -> str:
        n = len(str(self.target))
        frac = current / self.target if self.target else 1.0
        filled = int(self.width * frac)
        if current < self.target:
            bar = "=" * max(filled - 1, 0) + ">" + "." * (self.width - filled)
        else:
            bar = "=" * self.width
        return f"{current:{n}d}/{self.target} [{bar}]"

    def update(self, current: int, logs: dict | None = None, finalize: bool = False) -> None:
        if self.verbose == 0:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        per_step = elapsed / max(current, 1)
        if self.verbose == 1:
            if not finalize and (not self.dynamic or now - self._last_draw < self.interval):
                return
            self._last_draw = now
            if finalize:
                timing = f" - {_fmt_time(elapsed)} {_fmt_time(per_step)}/step"
            else:
                timing = f" - ETA: {_fmt_time(per_step * (self.target - current))}"
            line = self._bar(current) + timing + _fmt_logs(logs or {})
            pad = " " * max(self._last_len - len(line), 0)
            self._last_len = len(line)
            self.stream.write(("\r" if self.dynamic else "") + line + pad + ("\n" if finalize else ""))
            self.stream.flush()
        elif finalize:  # verbose == 2: one line at the end
            self.stream.write(f"{current}/{self.target} - {_fmt_time(elapsed)} - {_fmt_time(per_step)}/step"
                              + _fmt_logs(logs or {}) + "\n")
            self.stream.flush()
