"""`tinyvision predict RUN IMAGES...`: labels, scores and boxes for new images."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import TRUST_OPTION, console, err_console, user_errors
from tinyvision.run.predict import (OUTPUT_FORMATS, check_choice, collect_images, load_predictor,
                                    save_text, to_csv, to_json, write_annotated)


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
    camera: bool = typer.Option(False, "--camera", help="See each image as the device does: "
                                "rendered into a frame of the run's deploy.camera (.raw/.bin files "
                                "are read as frames), then the generated C preprocessing's "
                                "integer path and the int8 model."),
    trust_model_code: bool = TRUST_OPTION,
) -> None:
    """Predict labels, scores and boxes for new images with a run's model.

    Images are decoded exactly as the run's training cache was (input size, colour mode, resize),
    multi-label runs use their tuned thresholds.
    """
    check_choice("format", output_format, OUTPUT_FORMATS)
    paths = collect_images(images)
    predictor = load_predictor(model, kind, trust_model_code, camera=camera)
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
        for source, target in write_annotated(predictions, annotate):  # names may have changed
            err_console.print(f"annotated {escape(source)} -> {escape(str(target))}",
                              highlight=False, soft_wrap=True)


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
