"""Progress, one way: stages yield plain events; the caller decides how to show them.

A stage is a generator (smalldiffusion's pattern). It yields :class:`Step` (done of total, in a
unit, optionally with a short detail such as "3 memorized") and :class:`Note` (a line the user
should read: a resume, a skipped shard), and ``return``s its result. The caller either shows
them (:func:`show`: a tqdm bar on a terminal, a plain line every ~5% or 30 s elsewhere, where
carriage-return bars would pile into one line) or ignores them (:func:`drain`). No stage
builds a bar or prints.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Generator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """``done`` of ``total`` ``unit`` in the stage ``what``; ``detail`` is shown beside the bar."""

    what: str
    done: float
    total: float
    unit: str
    detail: str = ""


@dataclass(frozen=True)
class Note:
    """A line for the user (resumed work, something skipped), shown as it comes."""

    text: str


def drain(events: Generator[object, None, T]) -> T:
    """Run a stage to the end, showing nothing; returns its result."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value


def show(events: Generator[object, None, T], say: Callable[[str], None] | None = None) -> T:
    """Run a stage to the end with a bar per ``what`` and every :class:`Note` said; returns its result."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    bars: dict[str, Bar] = {}
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, Note):
                say(event.text)
            elif isinstance(event, Step):
                bar = bars.get(event.what)
                if bar is None:
                    bar = bars[event.what] = Bar(event.total, event.what, event.unit, initial=event.done)
                if event.detail:
                    bar.set_postfix_str(event.detail)
                bar.update_to(min(event.done, event.total))
    finally:
        for bar in bars.values():
            bar.close()


class Bar:
    """tqdm on a TTY; otherwise one plain line per ~5% or 30 s: stage, done/total, rate, ETA."""

    def __init__(self, total: float, desc: str, unit: str, initial: float = 0):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.tty = sys.stderr.isatty()
        self._t0 = self._last_t = time.monotonic()
        self._start_n = self._last_n = initial
        self._bar = None
        if self.tty:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit)

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update_to(self, n: float) -> None:
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        step = max(self.total * 0.05, 1e-9)
        if n >= self.total or n - self._last_n >= step or now - self._last_t >= 30:
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self._start_n) / max(now - self._t0, 1e-9)
        if self.n >= self.total:        # finished: how long it took (a rate over nothing done reads as a stall)
            tail = f"done in {now - self._t0:.1f} s" + (f", {rate:.2f} {self.unit}/s" if rate > 0 else "")
        elif rate > 0:
            tail = f"{rate:.2f} {self.unit}/s, {(self.total - self.n) / rate:.0f} s left"
        else:
            tail = "starting"
        print(f"{self.desc}: {self.n:.0f}/{self.total:.0f} {self.unit} ({100 * self.n / max(self.total, 1e-9):.0f}%), "
              f"{tail}", file=sys.stderr, flush=True)
        self._last_n, self._last_t = self.n, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._last_n:
            self._line(time.monotonic())
