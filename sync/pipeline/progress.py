"""Progress of long pulls and pushes for people: a rich bar on a terminal, plain log lines
without one (cron), never both."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

log = logging.getLogger("crmsync")


class Progress(Protocol):
    def __call__(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        ...


def quiet(msg: str, done: int | None = None, total: int | None = None) -> None:
    """No progress (library use, tests)."""


class Bar:
    """A rich progress bar on stderr: one task, its description the stage, a total when the
    stage knows one (a push's rows), else a count (a pull's contacts). Close it when done."""

    _bar: Any = None

    def __call__(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        if self._bar is None:  # started on first use: a command that fails early shows none
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), console=Console(stderr=True),
                                     transient=True)
            self._task = self._bar.add_task("", total=None)
            self._bar.start()
        if msg != self._bar.tasks[0].description:  # a new stage: its own count
            self._bar.reset(self._task, total=total, description=msg)
        self._bar.update(self._task, completed=done or 0, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class Lines:
    """Without a terminal: a stage's start, then a line at each tenth of a known total."""

    def __init__(self) -> None:
        self._last: tuple[str, int] | None = None

    def __call__(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        if done is None:
            return  # the stages themselves are logged where they happen
        if total:
            step = done * 10 // total
            if self._last != (msg, step):
                self._last = (msg, step)
                log.info("%s: %d of %d", msg, done, total)

    def close(self) -> None:
        pass


def make(human: bool) -> Bar | Lines:
    """A bar when stderr is a terminal and logs are human, else plain lines."""
    return Bar() if human and sys.stderr.isatty() else Lines()


def counted(rows: Iterable[Any], report: Callable[[int], None], every: int = 1000
            ) -> Iterator[Any]:
    """``rows``, calling ``report(n)`` every ``every`` rows (a pull of unknown size)."""
    n = 0
    for n, row in enumerate(rows, 1):
        if n % every == 0:
            report(n)
        yield row
    report(n)
