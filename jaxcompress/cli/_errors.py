"""Errors the command reports as one line on stderr with exit code 2 (no traceback)."""

from __future__ import annotations


class UsageError(ValueError):
    """A problem with the command line, the config, the data or the output directory.

    ``jaxcompress`` prints ``jaxcompress: error: <message>`` on one line and exits with 2.
    """


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C) after a resumable checkpoint was written."""

    def __init__(self, phase: str, step: int, total: int, directory: str):
        super().__init__(f"{phase} interrupted at step {step}/{total}")
        self.phase = phase  # "baseline" or "compressed"
        self.step = step  # last completed (and checkpointed) step
        self.total = total  # steps the phase would have run
        self.directory = directory  # the run folder


def one_line(message: str) -> str:
    """Collapses a (possibly multi-line) message into one line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
