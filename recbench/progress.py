"""Progress of long commands: rich bars on a terminal, plain flushed lines anywhere else.

This is the one place that decides between the two (:func:`shows_bars`). On an interactive
terminal the rich displays redraw in place. Redirected to a file, a pipe, CI or ``nohup``, a redrawn
bar cannot be shown (rich would print nothing until the end), so the callers' milestones (a
finished epoch, a finished grid cell) are written as one plain line each, flushed at once, with no
escape codes.

Progress goes to standard error, so standard output holds only results (tables, ``--json``).

Callers describe what they do; they never build a rich display themselves:

* :class:`ProgressDisplay` for counted work (batches, items, bytes): bars, or the lines its caller
  gives to :meth:`ProgressDisplay.line`.
* :class:`LiveDisplay` for a table redrawn as it changes (the ``compare`` grid), or its lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

Kind = Literal["count", "bytes"]
"""What a :class:`ProgressDisplay` counts: ``count`` (steps, items) or ``bytes`` (a download)."""


def shows_bars(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default: standard error) is an interactive terminal that can redraw a bar.

    Rich's own test, so its overrides apply too: ``TTY_INTERACTIVE=0|1``, ``TTY_COMPATIBLE``,
    ``FORCE_COLOR``, and ``TERM=dumb`` (a terminal that cannot move its cursor gets lines).
    """
    from rich.console import Console

    return Console(file=stream if stream is not None else sys.stderr).is_interactive


def write_line(stream: TextIO, text: str) -> None:
    """Write ``text`` as one line and flush, so a file or pipe sees it as it happens, not at exit."""
    stream.write(text + "\n")
    stream.flush()


def _columns(kind: Kind) -> tuple[Any, ...]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if kind == "bytes":
        return (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )


class ProgressDisplay:
    """Progress of counted work, as a context manager.

    On a terminal: rich bars, one per task (``count``: description, bar, done/total, elapsed time and
    a free ``status`` text; ``bytes``: description, bar, size, speed, time left). Elsewhere there are
    no bars and :meth:`line` prints its caller's milestones. Disabled (``enabled=False``), it shows
    nothing at all, so callers never need a second code path.
    """

    def __init__(
        self, kind: Kind = "count", enabled: bool = True, stream: TextIO | None = None, transient: bool = False
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.bars = enabled and shows_bars(self.stream)
        self._rich: Any = None
        if self.bars:
            from rich.console import Console
            from rich.progress import Progress

            self._rich = Progress(*_columns(kind), console=Console(file=self.stream), transient=transient)

    def __enter__(self) -> ProgressDisplay:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        """A new bar (an id for :meth:`update`); ``fields`` fill the columns (``status`` for ``count``)."""
        if self._rich is None:
            return 0
        return self._rich.add_task(description, total=total, **{"status": "", **fields})

    def update(self, task: int, **changes: Any) -> None:
        """Change a bar: ``description``, ``total``, ``completed``, ``advance`` or a field such as ``status``."""
        if self._rich is not None:
            self._rich.update(task, **changes)

    def advance(self, task: int, amount: float = 1) -> None:
        """Move a bar on by ``amount``."""
        if self._rich is not None:
            self._rich.advance(task, amount)

    def line(self, text: str) -> None:
        """A milestone: printed as one flushed line when there are no bars.

        On a terminal the bars already show that state, so nothing is printed there.
        """
        if self.enabled and not self.bars:
            write_line(self.stream, text)


class LiveDisplay:
    """A renderable redrawn in place on a terminal (``render()`` is called on every refresh), else lines.

    Off a terminal, the table is never drawn (it would only appear at the end) and :meth:`line`
    prints its caller's milestones instead.
    """

    def __init__(
        self,
        render: Callable[[], Any],
        enabled: bool = True,
        stream: TextIO | None = None,
        refresh_per_second: float = 2,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.render = render
        self.live = enabled and shows_bars(self.stream)
        self._rich: Any = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            # get_renderable: every refresh re-renders, so elapsed times keep moving between changes
            self._rich = Live(
                console=Console(file=self.stream),
                get_renderable=render,
                refresh_per_second=refresh_per_second,
                transient=False,
            )

    def __enter__(self) -> LiveDisplay:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.refresh()
            self._rich.stop()

    def refresh(self) -> None:
        """Redraw the renderable now (a terminal only)."""
        if self._rich is not None:
            self._rich.refresh()

    def line(self, text: str) -> None:
        """A milestone: printed as one flushed line when the renderable is not shown live."""
        if self.enabled and not self.live:
            write_line(self.stream, text)
