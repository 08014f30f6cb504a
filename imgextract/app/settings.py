"""The settings the command line shows as its options' defaults, from the modules that own them.

The command line imports only :mod:`imgextract.app`; this module hands it the owners' objects so
that no default is written twice. Only light modules are imported here (``imgextract --help``
starts without numpy).
"""

from __future__ import annotations

from imgextract.rule import CopyRule

__all__ = ["CopyRule"]
