"""`tinyvision predict`, `tinyvision report` and `tinyvision eval` (with --tta) as plain functions.

cli.py registers them: `app.command("predict")(predict_command)`, `app.command("report")(
report_command)`, `app.command("eval")(eval_command)`. They only parse and call library code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinyvision.cli_common import console, err_console, user_errors


RUN_ARG = typer.Argument(..., help="A run directory made by `tinyvision train`, e.g. runs/demo.",
                         exists=True, file_okay=False)




# ---- predict ---------------------------------------------------------------------------------
@user_errors
def predict_command(
    model: Path = typer.Argument(..., help="A run directory, or a model file in a run's export/ "
                                 "folder (model_int8.tflite or model_float.keras)."),
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched "
                                        "recursively for .jpg/.jpeg/.png/.bmp)."),
    kind: str = typer.Option("auto", "--kind", help="With a run directory: int8 (the exported "
                             ".tflite on LiteRT reference kernels, bit-exact with TFLM), float "
                             "(the .keras model) or auto (int8 when exported)."),
    output_format: str = typer.Option("table", "--format", "-f", help="table, json or csv."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the output to this file "
                                       "instead of the terminal.", dir_okay=False),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write copies of the images "
                                            "with labels, scores and boxes drawn to this folder.",
                                            file_okay=False),
    tta: bool = typer.Option(False, "--tta", help="Average each image's scores with its "
                             "left-right mirror image's."),
    tta_vertical: bool = typer.Option(False, "--tta-vertical", help="With --tta, also average "
                                      "with the top-bottom mirror image."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Class scores listed per image."),
) -> None:
    """Predict labels, scores and boxes for new images with a run's model.

    Images are decoded exactly as the run's training cache was (input size, colour mode, resize),
    multi-label runs use their tuned thresholds.
    """
    from tinyvision.predict import (OUTPUT_FORMATS, check_choice, collect_images, load_predictor,
                                    save_text, to_csv, to_json, write_annotated)

    check_choice("format", output_format, OUTPUT_FORMATS)
    paths = collect_images(images)
    predictor = load_predictor(model, kind)
    flips = ("horizontal", "vertical") if tta_vertical else ("horizontal",)
    tta = tta or tta_vertical
    predictions = predictor.predict(paths, tta=tta, top_k=top_k, flips=flips)
    if output_format == "json":
        _emit(to_json(predictions, predictor, tta), out, save_text)
    elif output_format == "csv":
        _emit(to_csv(predictions, top_k), out, save_text)
    else:
        _emit_table(_prediction_table(predictions, predictor, tta), out, save_text)
    if annotate is not None:
        written = write_annotated(predictions, annotate)
        err_console.print(f"annotated {len(written)} images in {escape(str(annotate))}")


def _emit(text: str, out: Path | None, save_text: Callable) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        save_text(out, text)
        err_console.print(f"wrote {escape(str(out))}")


def _emit_table(table: Table, out: Path | None, save_text: Callable) -> None:
    if out is None:
        console.print(table)
        return
    recorder = Console(record=True, width=200, file=io.StringIO())
    recorder.print(table)
    _emit(recorder.export_text(), out, save_text)


def _prediction_table(predictions, predictor, tta: bool) -> Table:
    title = f"{predictor.kind} model {predictor.model_path}" + (" (flip TTA)" if tta else "")
    table = Table(title=escape(title))
    table.add_column("image")
    table.add_column("labels")
    table.add_column("scores")
    has_box = any(p.box is not None for p in predictions)
    if has_box:
        table.add_column("box (x1, y1, x2, y2 pixels)")
    for p in predictions:
        row = [escape(p.path), escape(", ".join(p.labels) or "(none)"),
               escape(", ".join(f"{name} {score:.3f}" for name, score in p.top))]
        if has_box:
            row.append("" if p.box is None else ", ".join(f"{v:.0f}" for v in p.box))
        table.add_row(*row)
    return table


# ---- report ----------------------------------------------------------------------------------
@user_errors
def report_command(run_dir: Path = RUN_ARG) -> None:
    """Write the run's report.html: a self-contained page that opens offline.

    Config, data statistics and samples, training curves, confusion matrix, PR curves,
    thresholds, worst predictions, float vs int8-on-TFLM metrics, model and arena bytes.
    """
    from tinyvision.workflow import load_run, prepare_data, report_stage

    cfg, run, manifest = load_run(run_dir)
    path = report_stage(cfg, run, prepare_data(cfg, run, manifest, progress=False))
    console.print(f"wrote {escape(str(path))}")


# ---- eval ------------------------------------------------------------------------------------
@user_errors
def eval_command(
    run_dir: Path = RUN_ARG,
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Average each image's scores "
                                       "with its mirror image's (default: evaluate.tta of the "
                                       "run's config)."),
) -> None:
    """Evaluate a run's float model on its test split.

    Multi-label runs re-tune their thresholds on the val split first (thresholds.json). Prints
    per-class precision/recall/F1 and the confusion matrix; writes metrics.json.
    """
    from tinyvision.evaluate.metrics import format_metrics_table
    from tinyvision.workflow import evaluate_stage, load_run, prepare_data

    cfg, run, manifest = load_run(run_dir)
    if tta is not None:
        cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"tta": tta})})
    metrics = evaluate_stage(cfg, run, prepare_data(cfg, run, manifest))
    suffix = " with flip TTA" if metrics.get("tta") else ""
    console.print(format_metrics_table(metrics, title=f"float model on {metrics['split']}{suffix}"))
    matrix = metrics.get("confusion_matrix")
    if matrix:
        table = Table(title="confusion matrix (rows: true, columns: predicted)")
        table.add_column("")
        for name in manifest.classes:
            table.add_column(escape(name), justify="right")
        for name, row in zip(manifest.classes, matrix):
            table.add_row(escape(name), *(str(v) for v in row))
        console.print(table)
