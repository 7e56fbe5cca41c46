"""`tinyvision data ...`: build a manifest from a config, inspect a dataset, download COCO.

Mounted by `cli.py` as the `data` sub-command. It only parses arguments, calls the library and
prints; user errors (`TinyVisionError`) are printed in red without a traceback, exit status 1.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from tinyvision.cli.common import console, err_console, user_errors
from tinyvision.config import load_config
from tinyvision.data.download import FetchResult, Reporter, download_coco
from tinyvision.data.inspect import inspect_manifest
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources import build_manifest
from tinyvision.layout import MANIFEST_FILE

data_app = typer.Typer(help="Build, inspect and download datasets.", no_args_is_help=True,
                       add_completion=False, pretty_exceptions_enable=False)




# ---- build -----------------------------------------------------------------------------------
@data_app.command("build")
@user_errors
def build(config: Path = typer.Argument(..., help="Run config (YAML) with a data section."),
          overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. "
                                                          "data.source.min_area=0.01"),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Manifest to write "
                                             "[default: manifest.jsonl beside the config]")) -> None:
    """Build the manifest a config describes and print its images per class and split."""
    cfg = load_config(config, overrides or [])
    manifest = build_manifest(cfg.data, cfg.seed, cfg.model.task)
    out = out or config.parent / MANIFEST_FILE
    manifest.save(out)
    console.print(counts_table(manifest.classes, manifest.counts(),
                               f"{manifest.task}, {len(manifest)} images"))
    console.print(f"Wrote {escape(str(out))} (fingerprint {manifest.fingerprint()})")


def counts_table(classes: list[str], counts: dict[str, dict[str, int]], title: str) -> Table:
    """Images per class (rows) per split (columns)."""
    splits = [s for s, c in counts.items() if any(c.values())]
    table = Table(title=title)
    table.add_column("class")
    for split in splits + ["total"]:
        table.add_column(split, justify="right")
    for name in classes:
        row = [counts[s].get(name, 0) for s in splits]
        table.add_row(escape(name), *map(str, row), str(sum(row)))
    return table


# ---- inspect ---------------------------------------------------------------------------------
@data_app.command("inspect")
@user_errors
def inspect(source: Path = typer.Argument(..., help="A manifest (.jsonl) or a run config (.yaml)."),
            overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for grid.png and "
                                               "summary.json [default: <source>_inspect beside it]"),
            samples: int = typer.Option(24, min=1, max=400, help="Images in the grid."),
            seed: int = typer.Option(0, help="Which images the grid shows.")) -> None:
    """Counts per split, label co-occurrence, box sizes, problems and a grid of sample images."""
    manifest = _load_manifest(source, overrides or [])
    out = out or source.with_name(source.stem + "_inspect")
    report = inspect_manifest(manifest, out, samples, seed)
    console.print(counts_table(report.classes, report.counts, f"{report.task}, {len(manifest)} images"))
    if report.task == "multilabel" and len(report.classes) <= 20:
        console.print(_cooccurrence_table(report.classes, report.cooccurrence))
    for title, hist, unit in (("box side (pixels)", report.box_sides, "px"),
                              ("box area / image area", report.box_fractions, "")):
        if hist is not None:
            console.print(_histogram_table(title, hist.edges, hist.counts, unit))
    if report.problems:
        console.print(f"[yellow]{len(report.problems)} problem(s):[/]")
        for line in report.problems:
            console.print(f"  [yellow]-[/] {escape(line)}", soft_wrap=True)
    else:
        console.print("[green]No problems found.[/]")
    console.print(f"Wrote {escape(str(report.grid))} and summary.json")


def _load_manifest(source: Path, overrides: list[str]):
    if source.suffix in (".yaml", ".yml"):
        cfg = load_config(source, overrides)
        return build_manifest(cfg.data, cfg.seed, cfg.model.task)
    if overrides:
        raise typer.BadParameter("key=value overrides apply to a config, not to a manifest.")
    return Manifest.load(source)


def _cooccurrence_table(classes: list[str], matrix: list[list[int]]) -> Table:
    table = Table(title="images showing both classes")
    table.add_column("")
    for name in classes:
        table.add_column(escape(name), justify="right")
    for name, row in zip(classes, matrix):
        table.add_row(escape(name), *map(str, row))
    return table


def _histogram_table(title: str, edges: list[float], counts: list[int], unit: str) -> Table:
    table = Table(title=title)
    table.add_column("range")
    table.add_column("boxes", justify="right")
    table.add_column("")
    peak = max(counts) or 1
    for low, high, n in zip(edges, edges[1:], counts):
        label = f"{low:g}-{high:g}{unit}" if high != float("inf") else f">= {low:g}{unit}"
        table.add_row(label, str(n), "#" * round(30 * n / peak))
    return table


# ---- download --------------------------------------------------------------------------------
@data_app.command("download")
@user_errors
def download(dataset: str = typer.Argument(..., help="Dataset to fetch: coco."),
             classes: list[str] = typer.Option(..., "--classes", "-c", help="Categories, comma "
                                               "separated or repeated: --classes person,car"),
             year: str = typer.Option("2017", help="COCO release: 2017 or 2014."),
             out: Path = typer.Option(Path("coco"), "--out", "-o", help="Folder to download into."),
             splits: str = typer.Option("train,val", help="Annotation files: train, val or both."),
             negative: bool = typer.Option(True, help="Add a `negative` class of images showing "
                                           "none of the classes."),
             min_area: float = typer.Option(0.0, min=0.0, max=0.99, help="Smallest object that "
                                            "counts, as a fraction of the image area."),
             max_per_class: Optional[int] = typer.Option(None, min=1, help="Cap per class."),
             workers: int = typer.Option(8, min=1, max=64, help="Parallel downloads."),
             seed: int = typer.Option(0, help="Seed of caps, negatives and splits."),
             annotations_url: Optional[str] = typer.Option(None, help="Annotation zip URL "
                                                           "(a mirror)."),
             allow_host: Optional[list[str]] = typer.Option(
                 None, "--allow-host", help="Also download from this host (a mirror you trust); "
                 "only images.cocodataset.org by default. Repeat for several."),
             annotations_sha256: Optional[str] = typer.Option(
                 None, help="SHA-256 the annotation zip must have (default: the official "
                 "archive's; give it for a different archive).")) -> None:
    """Fetch COCO annotations, build the presence manifest, then only the images it needs
    (resumable: rerun to continue)."""
    if dataset.lower() != "coco":
        raise typer.BadParameter(f"unknown dataset {dataset!r}; supported: coco", param_hint="DATASET")
    names = [c.strip() for item in classes for c in item.split(",") if c.strip()]
    with _RichReporter() as reporter:
        result = download_coco(out, names, year, tuple(s.strip() for s in splits.split(",")),
                               negative, min_area, max_per_class, seed, workers, annotations_url,
                               reporter, tuple(allow_host or ()), annotations_sha256)
    console.print(f"Images: {result.count('downloaded')} downloaded, {result.count('skipped')} "
                  f"already present, {len(result.failed)} failed.")
    console.print(f"Wrote {escape(str(result.manifest))} and {escape(str(result.config))} "
                  f"(train with: tinyvision train {escape(str(result.config))})")
    if result.failed:
        for item in result.failed[:20]:
            err_console.print(f"  [red]{escape(item.url)}: {escape(item.error)}[/]")
        more = f" (and {len(result.failed) - 20} more)" if len(result.failed) > 20 else ""
        err_console.print(f"[bold red]error:[/] {len(result.failed)} image(s) failed{more}; "
                          "run the same command again to retry them.")
        raise typer.Exit(1)


class _RichReporter(Reporter):
    """Download progress as rich bars: the archive in bytes, then the images in files."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=console)
        self.archive: TaskID | None = None
        self.files: TaskID | None = None
        self.received = self.files_total = self.files_done = 0
        self.lock = threading.Lock()

    def __enter__(self) -> _RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, text: str) -> None:
        self.progress.console.print(escape(text))

    def bytes_started(self, name: str, total: int | None) -> None:
        self.archive = self.progress.add_task(escape(name), total=total, detail="")

    def bytes_done(self, n: int) -> None:
        self.received += n
        self.progress.update(self.archive, advance=n, detail=f"{self.received / 1e6:.1f} MB")

    def files_started(self, total: int) -> None:
        self.files_total, self.files_done = total, 0
        self.files = self.progress.add_task("images", total=total, detail=f"0/{total}")

    def file_done(self, result: FetchResult) -> None:
        with self.lock:
            self.files_done += 1
            self.progress.update(self.files, advance=1,
                                 detail=f"{self.files_done}/{self.files_total}")
