"""The `tinyvision` command line. It only parses arguments and calls library functions.

Errors a user can cause are printed as one message without a traceback (exit code 1).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from tinyvision.cli_common import console, err_console, user_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ info chatter


app = typer.Typer(
    name="tinyvision",
    help="Labelled images -> compact image models -> int8 models verified on TensorFlow Lite "
         "Micro.\n\nA run is described by one YAML config; everything it produces is saved in "
         "runs/NAME/.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # joins wrapped docstring lines into paragraphs
)


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)




def _mount_subcommands() -> None:
    from tinyvision.cli_data import data_app
    from tinyvision.cli_predict import eval_command, predict_command, report_command
    from tinyvision.cli_runs import runs_app
    from tinyvision.cli_train import lr_find_command

    app.command("eval")(eval_command)
    app.command("lr-find")(lr_find_command)
    app.command("predict")(predict_command)
    app.command("report")(report_command)
    app.add_typer(data_app, name="data")
    app.add_typer(runs_app, name="runs")


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                              help="Show debug messages.")) -> None:
    _setup_logging(verbose)


# ---- train -----------------------------------------------------------------------------------
@app.command()
@user_errors
def train(
    config: Optional[Path] = typer.Argument(None, help="Run config (YAML).", exists=True,
                                            dir_okay=False, show_default=False),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="Config overrides as dotted key=value, e.g. train.batch_size=32 "
                   "model.input_size=128 name=person-v2.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue a killed run (a folder under runs/) from its last saved "
        "epoch instead of starting a new one; give no CONFIG.", file_okay=False, exists=True),
) -> None:
    """Train, evaluate, export and verify a model from a run config.

    Data -> two-stage training -> metrics -> int8 model and C source -> check on TensorFlow Lite
    Micro. Everything goes to runs/NAME/ (a taken name gets a numbered suffix unless
    overwrite=true).
    """
    from tinyvision.config import load_config
    from tinyvision.errors import ConfigError
    from tinyvision.workflow import full_run, resume_run

    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume continues a run with the config saved in it; pass no "
                              "CONFIG or overrides with it.")
        run, summary = resume_run(resume, console=None if quiet else console, progress=not quiet)
    elif config is None:
        raise ConfigError("Give a run config: tinyvision train CONFIG [key=value ...], or "
                          "--resume runs/NAME.")
    else:
        cfg = load_config(config, overrides)
        run, summary = full_run(cfg, console=None if quiet else console, progress=not quiet)
    print_summary(summary)


# ---- stages on an existing run ---------------------------------------------------------------
RUN_ARG = typer.Argument(..., help="A run directory made by `tinyvision train`, e.g. runs/demo.",
                         exists=True, file_okay=False)


@app.command("export")
@user_errors
def export_command(run_dir: Path = RUN_ARG) -> None:
    """Export a run's float model to int8 LiteRT and C source.

    Full-integer quantisation (int8 input and output) calibrated on training images; writes
    export/model_int8.tflite and export/model_int8.h/.cc.
    """
    from tinyvision.workflow import export_stage, load_run, prepare_data

    cfg, run, manifest = load_run(run_dir)
    result = export_stage(cfg, run, prepare_data(cfg, run, manifest))
    console.print(f"int8 model: {run.int8_model} ({result['int8_bytes']:,} bytes); "
                  f"C source: {run.c_source}, {run.c_header}")


@app.command("verify")
@user_errors
def verify_command(run_dir: Path = RUN_ARG) -> None:
    """Check a run's int8 model on TensorFlow Lite Micro.

    Reports its metrics beside the float model's and the smallest tensor arena that works; fails
    if TFLM cannot run it or disagrees with the LiteRT reference kernels. Writes verify.json.
    """
    from tinyvision.workflow import load_run, prepare_data, verify_stage

    cfg, run, manifest = load_run(run_dir)
    report = verify_stage(cfg, run, prepare_data(cfg, run, manifest))
    console.print(f"TFLM ran {report['tflm_images']} images identically to the LiteRT reference "
                  f"kernels ({report['reference_images']} scored); arena {report['arena_bytes']:,} "
                  f"bytes; int8 accuracy {report['metrics']['accuracy']:.4f}")


# ---- demo ------------------------------------------------------------------------------------
@app.command()
@user_errors
def demo(
    runs_dir: Path = typer.Option(Path("runs"), help="Where the run directory goes."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Where to write the generated images (default: RUNS_DIR/demo-data)."),
    per_class: int = typer.Option(1200, min=20, help="Images per class (more: slower, more accurate)."),
    task: str = typer.Option("classify", help="classify: which shape; detect: which shape and "
                             "its box (class + box head; mean IoU and accuracy at IoU>=0.5)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline offline on a generated shapes dataset.

    Writes circle/square/triangle images on noisy textures, trains MobileNet V1 0.25 from scratch,
    evaluates, exports int8 and verifies it on TFLM, then prints a summary table.
    """
    from tinyvision.config import validate_config
    from tinyvision.demo import demo_config, make_shapes_dataset
    from tinyvision.errors import ConfigError
    from tinyvision.workflow import full_run

    from tinyvision.demo import DEMO_TASKS

    if task not in DEMO_TASKS:
        raise ConfigError(f"--task {task!r} is not one of {sorted(DEMO_TASKS)}.")
    data_dir = data_dir or runs_dir / "demo-data"
    if not (data_dir / "boxes.csv").is_file():
        console.print(f"writing {3 * per_class} demo images to {data_dir}")
        make_shapes_dataset(data_dir, per_class)
    cfg = validate_config(demo_config(data_dir.resolve(), runs_dir, task=task), source="demo config")
    run, summary = full_run(cfg, console=None if quiet else console, progress=not quiet)
    print_summary(summary)


# ---- output ----------------------------------------------------------------------------------
def print_summary(summary: dict) -> None:
    table = Table(title=f"run {summary['run']}")
    table.add_column("")
    table.add_column("float (Keras)", justify="right")
    table.add_column("int8 on TFLM", justify="right")
    table.add_column("delta", justify="right")
    for key in ("accuracy", "macro_f1"):
        if key in summary["float"]:
            table.add_row(key, f"{summary['float'][key]:.4f}", f"{summary['int8_tflm'][key]:.4f}",
                          f"{summary['delta'].get(key, 0.0):+.4f}")
    for key in ("mean_iou", "accuracy_iou50"):
        if key in summary["float"]:
            table.add_row(f"box {key}", f"{summary['float'][key]:.4f}",
                          f"{summary['int8_tflm'][key]:.4f}",
                          f"{summary['int8_tflm'][key] - summary['float'][key]:+.4f}")
    table.add_row("model bytes", f"{summary['float_bytes']:,}", f"{summary['int8_bytes']:,}", "")
    table.add_row("tensor arena bytes", "", f"{summary['arena_bytes']:,}", "")
    console.print(table)
    images = ", ".join(f"{k} {v}" for k, v in summary["images"].items())
    console.print(f"images: {images}; bad images skipped: {summary['bad_images']}; "
                  f"recipe {summary.get('recipe', '-')}; best epoch {summary['best_epoch']}; "
                  f"{summary['seconds']} s")
    for warning in summary.get("warnings", []):  # said when found; repeated where it is seen
        console.print(f"[bold yellow]warning:[/] {escape(warning['message'])}", highlight=False)


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
