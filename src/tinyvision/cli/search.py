"""`tinyvision search CONFIG --board NAME`: the most accurate model that fits the board."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import console, user_errors
from tinyvision.cli.train import print_summary
from tinyvision.run.run import as_config


@user_errors
def search_command(
    config: Path = typer.Argument(..., help="Run config (YAML); its search: section holds the "
                                  "candidate space.", exists=True, dir_okay=False),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="Config overrides as dotted key=value, e.g. search.alphas=[0.25,0.5].",
        show_default=False),
    board: str = typer.Option(..., "--board", "-b", help="Board profile name or YAML path."),
    latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="Estimated latency "
                                               "limit on the board [search.latency_ms]."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials in all, pruned ones "
                                         "included [search.trials: 20]."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="End the search after this "
                                            "long with the best so far [search.minutes]."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL shared by "
                                          "several machines [default: sqlite in runs/search/]."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name [the config's name]."),
    retrain: Optional[bool] = typer.Option(None, "--retrain/--no-retrain", help="Retrain, export "
                                           "and verify the best candidate [search.retrain]."),
) -> None:
    """Search backbone, width, input size, colour mode, dropout and learning rate for the most
    accurate model that fits the board.

    Candidates over the board's flash, RAM or latency are pruned before training; the rest train
    briefly while a Hyperband pruner stops the weak ones. Prints the Pareto front (val accuracy
    vs flash vs latency), writes runs/search/STUDY.html, then retrains the best fitting candidate
    with the full recipe, exports and verifies it. Run the same command again to continue a
    stopped search.
    """
    # TensorFlow loads here, after the CLI has set up its stderr filter
    from tinyvision.run.search import front_table_rows, search

    cfg = as_config(config, {}, list(overrides or []))
    result = search(cfg, board, trials=trials, minutes=minutes, latency_ms=latency_ms,
                    storage=storage, study_name=study, retrain=retrain, console=console)
    console.print(f"study {escape(result.study)}: {result.trials} trials, {result.completed} "
                  f"trained to the end, {result.pruned_early} stopped early, "
                  f"{result.pruned_over_budget} pruned before training (over budget); "
                  f"{result.seconds} s")
    table = Table(title=f"Pareto front: {result.objective} vs flash vs latency")
    for header in ("trial", result.objective, "flash bytes", "RAM bytes", "ms (est.)", "settings"):
        table.add_column(header, justify="left" if header == "settings" else "right")
    for row in front_table_rows(result):
        table.add_row(*map(escape, row))
    console.print(table)
    console.print(f"report: {escape(str(result.report))}")
    if result.final is not None:
        print_summary(result.final)
    elif result.best is None:
        console.print("[bold yellow]no candidate fits the board and trained to the end[/]")
        raise typer.Exit(1)
