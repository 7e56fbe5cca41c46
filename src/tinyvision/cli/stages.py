"""`tinyvision eval|export|verify|report RUN`: one stage again on an earlier run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import RUN_ARG, TRUST_OPTION, console, user_errors
from tinyvision.cli.train import print_device
from tinyvision.deploy.fit import PUBLIC_REFERENCES, fit_table
from tinyvision.run.run import Run
from tinyvision.run.summary import headline as summary_headline


@user_errors
def export_command(
    run_dir: Path = RUN_ARG,
    formats: Optional[list[str]] = typer.Option(
        None, "--format", "-f", help="Add this format to the finished run instead (float16, onnx, "
        "onnx_int8, coreml; repeat for several): written into export/, checked on its runtime "
        "against the Keras model, and listed in the run's export.formats. No training again."),
    trust_model_code: bool = TRUST_OPTION,
) -> None:
    """Export a run's float model to int8 LiteRT and C source, or to other formats.

    Full-integer quantisation (int8 input and output) calibrated on training images; writes
    export/model_int8.tflite and export/model_int8.h/.cc. With --format, only the formats named.
    """
    run = Run.open(run_dir, trust_model_code)
    if formats:
        checked = run.export(formats=formats)
        for name, entry in checked["formats"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in (entry.get("metrics") or {}).items())
            state = (f"checked on its runtime ({shown} on the {checked['split']} split; outputs "
                     f"within {entry.get('max_abs_diff', 0):.2g} of Keras)" if entry["verified"]
                     else escape(entry.get("note", "not run here")))
            console.print(f"{name}: {run.folder.export_dir / entry['file']} "
                          f"({entry['bytes']:,} bytes), {state}")
        return
    result = run.export()
    folder = run.folder
    console.print(f"int8 model: {folder.int8_model} ({result.int8_bytes:,} bytes); "
                  f"C source: {folder.c_source}, {folder.c_header}; TFLM application: "
                  f"{folder.app_dir} (ops {', '.join(result.ops)})")
    print_device(None, None, None, result.fit)


@user_errors
def verify_command(
    run_dir: Path = RUN_ARG,
    tflm_source: Optional[Path] = typer.Option(
        None, "--tflm-source", file_okay=False, help="A TFLM source tree to build export/app "
        "against and check it on the host [default: $TINYVISION_TFLM_SOURCE]. The run's own "
        "verify.tflm_source is not used: its build.sh would run here."),
    trust_run: bool = typer.Option(
        False, "--trust-model-code", help="Trust the run folder: load a float model that stores "
        "Python code, and build against the TFLM tree its config.yaml names (its build.sh "
        "runs). Only for runs you trust."),
) -> None:
    """Check a run's int8 model on TensorFlow Lite Micro.

    Reports its metrics beside the float model's and the smallest tensor arena that works; fails
    if TFLM cannot run it or disagrees with the LiteRT reference kernels. Writes verify.json.
    The application it compiles is written afresh from the run's model and config; build files
    in the run folder are never run.
    """
    report = Run.open(run_dir, trust_run, tflm_source).verify()
    headline = ", ".join(f"{key} {value:.4f}" for key, value in summary_headline(report.metrics)
                         .items())
    console.print(f"TFLM ran {report.tflm_images} images identically to the LiteRT reference "
                  f"kernels ({report.reference_images} scored, "
                  f"{report.reference_ms_per_image:.1f} ms each); arena {report.arena_bytes:,} "
                  f"bytes; int8 {headline}")
    print_device(report.app, report.firmware, report.camera, report.fit)


@user_errors
def fit_command(
    run_dir: Path = RUN_ARG,
    board: str = typer.Option(..., "--board", "-b", help="A board profile name (stm32h743, "
                              "nrf52840, ...; see --list-boards) or the path of a YAML file."),
    firmware: bool = typer.Option(
        True, "--firmware/--no-firmware", help="Measure: the firmware for the board's core, "
        "from verify when it ran that core, else built and run now on the emulated core (needs "
        "the TFLM tree and the Arm toolchain; a core's first library build takes minutes). "
        "--no-firmware: estimates only."),
    tflm_source: Optional[Path] = typer.Option(
        None, "--tflm-source", help="The TFLM tree to build the firmware against (default "
        "$TINYVISION_TFLM_SOURCE; never the run folder's own).", file_okay=False),
) -> None:
    """Does the run's int8 model fit a board? Flash, RAM and latency, as a table.

    Measured where the firmware was built for the board's core and run on the emulated core
    (flash and RAM of the linked firmware, instructions per inference; latency from them and the
    profile's calibrated cycles per instruction), else estimated; each row says which. The arena
    is the compiled application's when verify built it, else the Python TFLM interpreter's; the
    camera frame buffer of deploy.camera. Exits 1 when it does not fit. Writes nothing.
    """
    fit = Run.open(run_dir, tflm_source=tflm_source).fit(board, firmware=firmware)
    console.print(escape(fit_table(fit)), highlight=False)
    console.print(f"for comparison: {PUBLIC_REFERENCES}", highlight=False)
    if not fit.fits:
        raise typer.Exit(1)


# ---- report ----------------------------------------------------------------------------------
@user_errors
def report_command(run_dir: Path = RUN_ARG) -> None:
    """Write the run's report.html: a self-contained page that opens offline.

    Config, data statistics and samples, training curves, confusion matrix, PR curves,
    thresholds, worst predictions, float vs int8-on-TFLM metrics, model and arena bytes.
    """
    path = Run.open(run_dir).report()
    console.print(f"wrote {escape(str(path))}")


# ---- eval ------------------------------------------------------------------------------------
@user_errors
def eval_command(
    run_dir: Path = RUN_ARG,
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Average each image's scores "
                                       "with its mirror image's (default: evaluate.tta of the "
                                       "run's config)."),
    trust_model_code: bool = TRUST_OPTION,
) -> None:
    """Evaluate a run's float model on its test split.

    Multi-label runs re-tune their thresholds on the val split first (thresholds.json). Prints
    per-class precision/recall/F1 and the confusion matrix; writes metrics.json.
    """
    from tinyvision.evaluate.metrics import format_metrics_table
    run = Run.open(run_dir, trust_model_code)
    metrics = run.evaluate(tta)
    classes = metrics["classes"]
    suffix = " with flip TTA" if metrics.get("tta") else ""
    console.print(format_metrics_table(metrics, title=f"float model on {metrics['split']}{suffix}"))
    matrix = metrics.get("confusion_matrix")
    if matrix:
        table = Table(title="confusion matrix (rows: true, columns: predicted)")
        table.add_column("")
        for name in classes:
            table.add_column(escape(name), justify="right")
        for name, row in zip(classes, matrix):
            table.add_row(escape(name), *(str(v) for v in row))
        console.print(table)
