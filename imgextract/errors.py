"""The one exception type users see.

Every bad argument becomes an ``InputError`` whose message names the offending input and
the remedy on a single line; the CLI prints it and exits non-zero before any work starts.
"""

from __future__ import annotations


# Exit codes, decided once (docs/errors.md):
OK = 0
FOUND = 1          # guard: the image replicates a training image
BAD_INPUT = 2      # usage errors and InputError, before any work
INTERNAL = 70      # an unexpected failure (a bug or the machine): never a verdict; the traceback is kept in a file
INTERRUPTED = 130  # Ctrl-C / SIGINT: finished shards are kept


class InputError(Exception):
    """A bad argument: message = what is wrong with which input, then how to fix it."""

    def __init__(self, what: str, remedy: str, details: list[str] | None = None):
        self.what = what
        self.remedy = remedy
        self.details = details or []  # printed after the error line (e.g. the skipped files)
        super().__init__(f"{what}; {remedy}")

