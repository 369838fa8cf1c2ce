"""Shared CLI plumbing: one clear error line and the contract's exit codes."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Callable, TypeVar

import typer
from rich.console import Console

from lagnh_pyg.errors import InputError, LagnhError

console = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2 = bad input or usage)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn library errors into one line on stderr and the contract's exit code.

    InputError (and ValueError-like bad input surfaced as InputError) -> exit 2;
    LagnhError -> exit 1; a missing optional dependency -> exit 2 with the install hint.
    Python warnings raised meanwhile (torch's, numpy's) are held back and shown once the
    command succeeds (with -v always): before an error line they would break the one-line
    contract.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        with warnings.catch_warnings(record=True) as held:
            try:
                result = _call(func, args, kwargs)
            except BaseException:
                if verbose:
                    _show(held)
                raise
        _show(held)
        return result

    return wrapper  # type: ignore[return-value]


def _show(held: list) -> None:
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _call(func: Callable, args, kwargs):
    """``func(*args, **kwargs)`` with its errors turned into the contract's line and exit code."""
    try:
        return func(*args, **kwargs)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except InputError as e:
        fail(str(e), 2)
    except LagnhError as e:
        fail(str(e), 1)
    except ModuleNotFoundError as e:
        fail(f"missing optional dependency {e.name!r}; install it (e.g. pip install 'lagnh-pyg[vision]')", 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except MemoryError:
        fail("out of memory; try a smaller batch or chunk size", 1)
    except Exception as e:  # a bug: one line by default, the traceback with -v
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        fail(f"internal error {type(e).__name__}: {msg} (run `lagnh -v ...` for the traceback)", 1)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader chatters at INFO
