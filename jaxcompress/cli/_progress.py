"""The progress bar of a training phase (rich on a terminal, silent otherwise)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as _RichProgress,
)


class Progress:
    """One bar per phase on stderr; disabled when stderr is not a terminal.

    Args:
      enabled: show the bar; ``None`` decides by whether the console is a terminal.
      console: where to draw (default: a rich Console on stderr).
    """

    def __init__(self, enabled: bool | None = None, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._bar = None
        self._task = None

    def start(self, name: str, total: int, completed: int = 0) -> None:
        """Starts the bar of phase ``name`` at ``completed`` of ``total`` steps."""
        if not self.enabled:
            return
        self._bar = _RichProgress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(name, total=total, completed=completed, loss="-")

    def set_loss(self, loss: float) -> None:
        """Shows the latest training loss."""
        if self._bar is not None:
            self._bar.update(self._task, loss=f"{loss:.4f}")

    def advance(self) -> None:
        """One step done."""
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        """Ends the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
