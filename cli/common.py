"""What every command shares: the consoles and ``say``, the options written once (``--device``),
the progress bar, and the one place library errors become the contract's line and exit code
(:mod:`lagnh_pyg.errors`: ``InputError`` 2, ``LagnhError`` 1)."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Annotated, Callable, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lagnh_pyg.errors import InputError, LagnhError

console = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable)

#: ``--device``: where a command computes (resolved by :func:`lagnh_pyg.device.resolve_device`)
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU when visible), cpu or cuda[:N].")]


def say(message: str) -> None:
    """One plain line on stdout (no Rich markup, no wrapping: output is parsed by scripts)."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def parse_topk(value: str) -> int | None:
    """``--topk``: a positive integer, or ``all`` (the whole ranking)."""
    if value.strip().lower() in ("all", "none"):
        return None
    try:
        k = int(value)
    except ValueError:
        raise InputError(f"--topk must be a positive integer or 'all', got {value!r}") from None
    if k < 1:
        raise InputError(f"--topk must be a positive integer or 'all', got {value!r}")
    return k


class _Rate(ProgressColumn):
    """Images a second over the whole run so far."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.1f} img/s")


def image_progress() -> Progress:
    """The progress bar of the commands that go through images (on stderr, removed when done)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2 = bad input or usage)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn library errors into one line on stderr and the contract's exit code.

    A :class:`~lagnh_pyg.errors.LagnhError` exits with its class's ``exit_code`` (InputError:
    2, any other LagnhError: 1); a missing optional dependency -> exit 2 with the install hint.
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
    except LagnhError as e:  # InputError included: the exit code is the error class's
        fail(str(e), e.exit_code)
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
