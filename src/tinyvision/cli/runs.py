"""`tinyvision runs`: the run registry as a sortable, filterable table, CSV, and run comparison.

Mounted by cli.py as `app.add_typer(runs_app, name="runs")`. It only parses and calls
`tinyvision.run.registry`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import console, err_console, user_errors
from tinyvision.run.registry import ABSENT, COLUMNS, Registry


runs_app = typer.Typer(
    help="The run registry (runs/registry.sqlite): list, filter, sort, export and compare runs.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (header, formatter of one row) of the printed table; the CSV has every column.
_TABLE: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("name", lambda r: r["name"]),
    ("status", lambda r: _status(r["status"])),
    ("started", lambda r: _local_time(r["started"])),
    ("backbone", lambda r: _join(" ", r["backbone"], _num(r["alpha"], "{:g}"))),
    ("input", lambda r: _join(" ", r["input_size"], r["color_mode"])),
    ("weights", lambda r: _text(r["weights"])),
    ("batch", lambda r: _num(r["batch_size"], "{:d}")),
    ("epochs", lambda r: _join("+", _num(r["head_epochs"], "{:d}"),
                               _num(r["fine_tune_epochs"], "{:d}"))),
    ("lr", lambda r: _join("/", _num(r["head_lr"], "{:.0e}"), _num(r["fine_tune_lr"], "{:.0e}"))),
    ("float acc", lambda r: _num(r["float_accuracy"], "{:.4f}")),
    ("float F1", lambda r: _num(r["float_macro_f1"], "{:.4f}")),
    ("int8 acc", lambda r: _num(r["int8_accuracy"], "{:.4f}")),
    ("int8 F1", lambda r: _num(r["int8_macro_f1"], "{:.4f}")),
    ("float IoU", lambda r: _num(r["float_mean_iou"], "{:.4f}")),
    ("int8 IoU", lambda r: _num(r["int8_mean_iou"], "{:.4f}")),
    ("int8 IoU>=.5", lambda r: _num(r["int8_iou50"], "{:.4f}")),
    ("int8 KiB", lambda r: _num(r["int8_bytes"] and r["int8_bytes"] / 1024, "{:.1f}")),
    ("arena KiB", lambda r: _num(r["arena_bytes"] and r["arena_bytes"] / 1024, "{:.1f}")),
    ("MMACs", lambda r: _num(r["macs"] and r["macs"] / 1e6, "{:.2f}")),
    ("board", lambda r: _join(" ", r["board"], None if r["fits"] is None else
                              ("fits" if r["fits"] else "OVER"))),
    ("ms", lambda r: _latency(r)),
    ("formats", lambda r: " ".join(json.loads(r["formats"])) if r["formats"] else "-"),
    ("warnings", lambda r: _text(r["warnings"])),
)
# metric columns shown only when a listed run has a value in them
_OPTIONAL = frozenset({"float acc", "float F1", "int8 acc", "int8 F1", "float IoU", "int8 IoU",
                       "int8 IoU>=.5", "board", "ms"})
_LEFT_ALIGNED = frozenset({"name", "status", "started", "backbone", "input", "weights", "board"})
_PER_CLASS_KEYS = (".per_class.", ".ap_per_iou.", ".label_confusion.")
_PIPE_WIDTH = 250




@runs_app.callback(invoke_without_command=True)
@user_errors
def list_runs(
    ctx: typer.Context,
    sort: str = typer.Option("started", "--sort", "-s",
                             help=f"Column to sort by; '-' first for descending, e.g. "
                                  f"-float_accuracy. Columns: {', '.join(COLUMNS)}."),
    filters: Optional[list[str]] = typer.Option(
        None, "--filter", "-f", show_default=False,
        help="Keep runs where COLUMN=VALUE (also !=, >=, <=, >, <; * globs text). Repeatable; "
             "quote > and < from the shell: --filter backbone=mobilenet_v1 "
             "--filter 'float_accuracy>=0.9'."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", dir_okay=False, show_default=False,
                                            help="Also write the table (every column) as CSV."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", file_okay=False,
                                  help="Folder holding the runs and registry.sqlite."),
) -> None:
    """List runs as the model-selection table (`tinyvision runs compare A B` compares two)."""
    ctx.obj = {"runs_dir": runs_dir}
    if ctx.invoked_subcommand is not None:
        return
    registry = Registry(runs_dir, create=False)
    registry.mark_dead_runs()  # a killed run would otherwise stay "running" forever
    rows = registry.rows(sort=sort, filters=filters or None)
    if csv_path is not None:
        registry.to_csv(csv_path, sort=sort, filters=filters or None)
        err_console.print(f"Wrote {len(rows)} run(s) to {escape(str(csv_path))}", highlight=False)
    if not rows:
        console.print("No runs match." if filters else f"No runs in {registry.path}.")
        return
    table = runs_table(rows, title=f"Runs in {registry.path}")
    # Piped output (a file, `less`) gets the whole table rather than 80 squeezed columns.
    out = console if console.is_terminal else Console(width=_PIPE_WIDTH)
    out.print(table)
    for row in rows:
        if row["status"] in ("failed", "export_failed", "interrupted") and row["error"]:
            out.print(f"[red]{escape(row['name'])} {row['status'].replace('_', ' ')}:[/] "
                      f"{escape(row['error'])}", highlight=False)


@runs_app.command("compare")
@user_errors
def compare_runs(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="First run's name (the baseline)."),
    b: str = typer.Argument(..., help="Second run's name; deltas are B - A."),
    show_all: bool = typer.Option(False, "--all", help="Also list per-class and per-IoU metrics."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", file_okay=False,
                                            show_default=False,
                                            help="Folder holding registry.sqlite. [default: runs]"),
) -> None:
    """Show how two runs' configs differ and how their metrics moved (B - A)."""
    folder = runs_dir or (ctx.obj or {}).get("runs_dir", Path("runs"))
    changes, deltas = Registry(folder, create=False).compare(a, b)
    if not show_all:
        deltas = [d for d in deltas if not any(k in f".{d.key}." for k in _PER_CLASS_KEYS)]
    config_table = Table(title=escape(f"Config: {a} vs {b}"))
    for column in ("key", a, b):
        config_table.add_column(escape(column), overflow="fold")
    for change in changes:  # keys and values are user data: printed, never read as markup
        config_table.add_row(escape(change.key), _value(change.a), _value(change.b))
    if changes:
        console.print(config_table)
    else:
        console.print("Configs are identical (apart from name and runs_dir).")
    if not deltas:
        console.print("No metrics in common (a run failed or has not finished).")
        return
    metric_table = Table(title=escape(f"Metrics: {b} - {a}"))
    for column, justify in (("metric", "left"), (a, "right"), (b, "right"), ("delta", "right")):
        metric_table.add_column(escape(column), justify=justify)
    for delta in deltas:  # a key holds class names (per_class.NAME.f1)
        colour = "green" if delta.delta > 0 else "red" if delta.delta < 0 else "dim"
        metric_table.add_row(escape(delta.key), f"{delta.a:.6g}", f"{delta.b:.6g}",
                             f"[{colour}]{delta.delta:+.6g}[/]")
    console.print(metric_table)


def runs_table(rows: list[dict], title: str | None = None) -> Table:
    """The printed model-selection table of `rows` (from `Registry.rows`)."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    # a column no listed run fills is left out (box columns for classifiers, and the other way)
    shown = [(header, cell) for header, cell in _TABLE
             if header not in _OPTIONAL or any(cell(row) != "-" for row in rows)]
    for header, _ in shown:
        table.add_column(header, justify="left" if header in _LEFT_ALIGNED else "right")
    for row in rows:
        table.add_row(*(escape(cell(row)) if header != "status" else cell(row)
                        for header, cell in shown))
    return table


def _status(status: str) -> str:
    colour = {"finished": "green", "failed": "red", "export_failed": "red", "running": "yellow",
              "interrupted": "yellow"}.get(status, "white")
    return f"[{colour}]{escape(status)}[/]"


def _local_time(stamp: str | None) -> str:
    if not stamp:
        return "-"
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%m-%d %H:%M")
    except ValueError:
        return stamp


def _num(value: Any, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(int(value) if pattern == "{:d}" else value)


def _latency(row: dict) -> str:
    """The latency on the board and its basis: from the firmware's instructions counted on the
    emulated core (x calibrated cycles/instruction), or estimated from the MACs."""
    if row["latency_ms"] is None:
        return "-"
    basis = "firmware" if row["fit_basis"] == "measured" else "est."
    return f"{_num(row['latency_ms'], '{:g}')} ({basis})"


def _join(separator: str, *parts: Any) -> str:
    """Parts joined, missing ones as '-'; a single '-' when all are missing."""
    texts = ["-" if p is None or p == "-" else str(p) for p in parts]
    return "-" if all(t == "-" for t in texts) else separator.join(texts)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _value(value: Any) -> str:
    return ABSENT if value is ABSENT else escape(repr(value) if isinstance(value, str) else
                                                 str(value))
