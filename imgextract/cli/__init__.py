"""Command line: each command checks its arguments and makes one call into :mod:`imgextract.app`.

Every bad argument surfaces as one ``error:`` line with the remedy and exit code 2, before any
work starts. Commands live in one module per group (index, audit, users, toy, convert); options that
several commands share are declared once in :mod:`imgextract.cli.options`.
"""

from __future__ import annotations

import sys

import typer

from imgextract import errors
from imgextract.cli import audit, convert, index, labels, toy, users
from imgextract.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit text-to-image diffusion models for memorized training images.")
app.add_typer(index.app, name="index")
app.add_typer(toy.app, name="toy")
app.add_typer(convert.app, name="convert")
app.add_typer(labels.app, name="labels")
for name, command in {**audit.COMMANDS, **users.COMMANDS}.items():
    app.command(name)(command)


def _click_exception() -> type:
    """Usage errors' base class in the click that typer runs on (typer >= 0.2x bundles its own)."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # older typer: plain click
        from click.exceptions import ClickException
    return ClickException


def _environment_error(exc: OSError) -> bool:
    """A folder that cannot be written or a full disk: one error line naming the path."""
    import errno
    remedy = {errno.EACCES: "permission denied; make it readable and writable, or choose another folder",
              errno.EPERM: "permission denied; make it readable and writable, or choose another folder",
              errno.EROFS: "read-only file system; choose another output folder",
              errno.ENOSPC: "no space left on the device; free some space, then run the same command to resume",
              errno.EDQUOT: "disk quota exceeded; free some space, then run the same command to resume"}.get(exc.errno)
    if remedy is None:
        return False
    where = exc.filename if exc.filename is not None else "the output folder"
    typer.echo(f"error: cannot use {where}: {remedy}", err=True)
    return True


def _internal_error(exc: BaseException) -> None:
    import os
    import tempfile
    import traceback
    text = "".join(traceback.format_exception(exc))
    where = "not written"
    try:
        fd, path = tempfile.mkstemp(prefix="imgextract-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"imgextract {' '.join(sys.argv[1:])}\n\n{text}")
        where = f"written to {path}"
    except OSError:
        pass
    first = (str(exc).splitlines() or [""])[0][:300]
    typer.echo(f"internal error: {type(exc).__name__}: {first} (not a verdict; the traceback is {where}; "
               "please report it)", err=True)
    sys.exit(errors.INTERNAL)


def main() -> None:
    """Exit codes (docs/errors.md): 0 ok, 1 found (guard), 2 bad input or usage, 70 internal error,
    130 interrupted."""
    import logging
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("imgextract").addHandler(handler)
    said = logging.StreamHandler(sys.stderr)      # notes: what the tool decided for the user (e.g. a file's form)
    said.setFormatter(logging.Formatter("note: %(message)s"))
    note = logging.getLogger("imgextract.note")
    note.addHandler(said)
    note.setLevel(logging.INFO)
    note.propagate = False
    usage_error = _click_exception()
    try:
        code = app(standalone_mode=False)
    except InputError as err:
        typer.echo(f"error: {err}", err=True)
        for line in err.details:
            typer.echo(f"  {line}", err=True)
        sys.exit(errors.BAD_INPUT)
    except (KeyboardInterrupt, typer.Abort):
        code = errors.INTERRUPTED
    except usage_error as ex:  # usage errors: click's own message, exit 2
        ex.show()
        sys.exit(ex.exit_code)
    except SystemExit:
        raise
    except OSError as exc:
        if not _environment_error(exc):
            _internal_error(exc)
        sys.exit(errors.BAD_INPUT)
    except Exception as exc:  # the last resort: one line, the traceback in a file, a code that is no verdict
        _internal_error(exc)
    if code == errors.INTERRUPTED:
        typer.echo("interrupted: finished shards are kept; run the same command again to resume", err=True)
    sys.exit(code if isinstance(code, int) else errors.OK)
