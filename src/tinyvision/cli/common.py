"""What every `tinyvision` command shares: the consoles and the user-error wrapper."""

from __future__ import annotations

import errno
from functools import wraps
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from tinyvision.errors import TinyVisionError
from tinyvision.run.run import RunInterrupted

console = Console(stderr=False)
err_console = Console(stderr=True)

RUN_ARG = typer.Argument(..., help="A run directory made by `tinyvision train`, e.g. runs/demo.",
                         exists=True, file_okay=False)
TRUST_OPTION = typer.Option(
    False, "--trust-model-code", help="Load a float model that stores Python code (Lambda layers "
    "of a backbone cut from your own model file). Only for runs you trust: a run folder never "
    "switches this on by itself.")


def user_errors(func: Callable) -> Callable:
    """Print a `TinyVisionError`, or a full disk, as one red message (no traceback) and exit
    with status 1."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TinyVisionError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            err_console.print(f"[bold red]error:[/] the disk is full{escape(where)} "
                              f"({escape(exc.strerror or '')}); free some space, or write to "
                              "another disk (runs_dir, data.cache_dir, --out), and run the "
                              "command again.", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:  # Ctrl-C (130) or, during a run, SIGTERM (143)
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(143 if isinstance(exc, RunInterrupted) else 130) from None

    return wrapper
