"""The one exception type users see.

Every bad argument becomes an ``InputError`` whose message names the offending input and
the remedy on a single line; the CLI prints it and exits non-zero before any work starts.
"""

from __future__ import annotations


class InputError(Exception):
    """A bad argument: message = what is wrong with which input, then how to fix it."""

    def __init__(self, what: str, remedy: str):
        self.what = what
        self.remedy = remedy
        super().__init__(f"{what}; {remedy}")
