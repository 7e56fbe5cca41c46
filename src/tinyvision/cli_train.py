"""`tinyvision lr-find CONFIG [key=value ...]`: the learning-rate sweep from the command line.

Mounted by cli.py as `app.command("lr-find")(lr_find_command)`. It only parses and calls
`tinyvision.train.lr_finder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tinyvision.cli_common import console, user_errors





@user_errors
def lr_find_command(
    config: Path = typer.Argument(..., help="Run config (YAML).", exists=True, dir_okay=False),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="Config overrides as dotted key=value, e.g. train.batch_size=32.",
        show_default=False),
    start: Optional[float] = typer.Option(None, help="First rate [train.lr_find.start: 1e-7]."),
    end: Optional[float] = typer.Option(None, help="Last rate [train.lr_find.end: 10]."),
    steps: Optional[int] = typer.Option(None, help="Rates tried [train.lr_find.steps: 200]."),
    stage: Optional[str] = typer.Option(
        None, help="Layers that train: head or fine_tune [train.lr_find.stage: head]."),
    start_from: Optional[str] = typer.Option(
        None, "--from", help="Start from a run's best weights (runs/NAME) or a .weights.h5 file, "
        "e.g. a run that trained the head, before sweeping for fine_tune "
        "[train.lr_find.weights]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sweep the learning rate exponentially and suggest one.

    Trains one batch per rate (on a fresh model, or from --from) until the loss explodes, then
    saves lr_find.csv
    and lr_find.png in runs/NAME-lr-find/ and prints the rate where the smoothed loss falls
    fastest. Put it in train.head.learning_rate (or fine_tune, with --stage fine_tune).
    """
    from tinyvision.config import load_config
    from tinyvision.train.lr_finder import run_lr_find

    options = {"start": start, "end": end, "steps": steps, "stage": stage, "weights": start_from}
    extra = [f"train.lr_find.{key}={value}" for key, value in options.items() if value is not None]
    cfg = load_config(config, list(overrides or []) + extra)
    settings = cfg.train.lr_find
    if quiet:
        run, result = run_lr_find(cfg, progress=False)
    else:
        run, result = _with_progress(cfg, settings.steps)
    stopped = " (stopped early: the loss exploded)" if result.stopped_early else ""
    console.print(f"swept {len(result.learning_rates)} rates from {settings.start:.1e}{stopped}; "
                  f"plot and CSV in {run.root}")
    if result.suggestion is None:
        console.print("[yellow]no suggestion:[/] the loss never fell; lower --start or check the "
                      "data and loss.")
    else:
        field = "fine_tune" if settings.stage == "fine_tune" else "head"
        console.print(f"suggested learning rate: [bold]{result.suggestion:.2e}[/] "
                      f"(train.{field}.learning_rate={result.suggestion:.2e})")


def _with_progress(cfg, steps: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tinyvision.train.lr_finder import run_lr_find

    columns = (TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=steps, status="")

        def on_step(step: int, rate: float, loss: float) -> None:
            progress.update(task, completed=step + 1, status=f"lr={rate:.2e} loss={loss:.4f}")

        return run_lr_find(cfg, on_step)


def register(app: typer.Typer) -> None:
    """Mount `lr-find` on the main app."""
    app.command("lr-find")(lr_find_command)
