"""Progress of a long step for a person at a terminal: one line per step, updated in place, with the items done of
the total, the rate and the time left (tqdm), on stderr. Training, scoring (mining's model agents, evaluation,
self-training) and annotation report through ``Progress``.

The line is shown only where stderr was a terminal when this module was loaded, and is written to a duplicate of
that terminal: a run Dagster executes sends stderr through its compute log (a file tailed back to the terminal,
where a line updated in place would be garbled and a bar's every redraw stored). Output sent to a file, a test
run, a daemon's run: no line; ``reporting_to`` a log then says how far a step is (a Dagster run's log, in its UI),
and ``watching`` sees every update wherever it runs (tests).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


def _terminal():
    """A duplicate of stderr's terminal, or None where stderr is no terminal."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return os.fdopen(os.dup(sys.stderr.fileno()), "w", encoding=sys.stderr.encoding or "utf-8",
                             errors="replace", closefd=True)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _width(stream) -> int | None:
    """The terminal's width (a longer line would wrap, and no longer update in place), None where unknown."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, OSError, ValueError):
        return None


TERMINAL = _terminal()
_label = ""  # put before every step's name: e.g. the comparison arm a process runs
_listeners: list[Callable[["Progress"], None]] = []


def set_label(label: str) -> None:
    """Name this process's lines (``label`` goes before each step's name), e.g. when several processes share one
    terminal."""
    global _label
    _label = f"{label} " if label else ""


def say(message: str) -> None:
    """Print a line on stdout, first clearing a progress line another process may have left on the terminal."""
    clear = "\r\x1b[K" if TERMINAL is not None and sys.stdout.isatty() else ""
    print(f"{clear}{message}", flush=True)


class Progress:
    """A long step's progress: ``advance`` as items get done; ``discount`` items that will not be needed after all
    (a pair settled early), so the total and the time left stay true. Thread-safe. ``enabled=False``: no line
    (listeners still see it)."""

    def __init__(self, total: int, step: str, unit: str = "item", enabled: bool = True):
        self.step, self.unit, self.total, self.done = step, unit, int(total), 0
        self.postfix, self.started = "", time.monotonic()
        self._lock = threading.Lock()
        stream = TERMINAL if enabled else None
        self._bar = tqdm(total=self.total, desc=f"{_label}{step}", unit=unit, file=stream, disable=stream is None,
                         leave=False, mininterval=0.5, ncols=_width(stream), smoothing=0.1)
        self._notify()

    def advance(self, n: int = 1, postfix: str | None = None) -> None:
        with self._lock:
            self.done += n
            if postfix is not None:
                self.postfix = postfix
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)
            self._notify()

    def discount(self, n: int) -> None:
        """``n`` items of the total will not be done (not needed): the total shrinks by them."""
        if n <= 0:
            return
        with self._lock:
            self.total -= n
            self._bar.total = self.total
            self._bar.refresh()
            self._notify()

    def summary(self) -> str:
        """E.g. ``annotation: 300/1000 paths (30%), 2.14path/s, 05:26 left``."""
        line = tqdm.format_meter(self.done, self.total, time.monotonic() - self.started, prefix=f"{self.step}: ",
                                 unit=self.unit, postfix=self.postfix or None,
                                 bar_format="{desc}{n_fmt}/{total_fmt} {unit}s ({percentage:.0f}%), {rate_fmt}, "
                                            "{remaining} left{postfix}")
        return " ".join(line.split())  # tqdm pads the rate for a bar

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _notify(self) -> None:
        for listener in list(_listeners):
            listener(self)


@contextmanager
def reporting_to(log: Callable[[str], None], every_s: float = 60.0) -> Iterator[None]:
    """While in the block, every step's ``summary`` to ``log`` (e.g. a Dagster run's log, which its UI shows, also
    where no terminal sees the line): when it starts, at most every ``every_s`` seconds, and when it is done."""
    logged: dict[int, float] = {}

    def listen(progress: Progress) -> None:
        now, key = time.monotonic(), id(progress)
        if key not in logged or progress.done >= progress.total or now - logged[key] >= every_s:
            logged[key] = now
            log(progress.summary())

    _listeners.append(listen)
    try:
        yield
    finally:
        _listeners.remove(listen)


@contextmanager
def watching() -> Iterator[list[tuple[str, int, int]]]:
    """Every progress update while in the block, as ``(step, done, total)``."""
    seen: list[tuple[str, int, int]] = []

    def listen(progress: Progress) -> None:
        seen.append((progress.step, progress.done, progress.total))

    _listeners.append(listen)
    try:
        yield seen
    finally:
        _listeners.remove(listen)
