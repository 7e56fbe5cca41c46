"""`tinyvision train`, `tinyvision lr-find` and `tinyvision demo`: commands that train."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import console, user_errors
from tinyvision.config import load_config
from tinyvision.data.demo import DEMO_TASKS, demo_config, make_shapes_dataset
from tinyvision.deploy.fit import PUBLIC_REFERENCES, fit_table
from tinyvision.records import BoardFit, Summary
from tinyvision.errors import ConfigError, check_choice
from tinyvision.run.run import lr_find, resume as resume_run, train


# ---- train -----------------------------------------------------------------------------------
@user_errors
def train_command(
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
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume continues a run with the config saved in it; pass no "
                              "CONFIG or overrides with it.")
        run = resume_run(resume, console=None if quiet else console, progress=not quiet)
    elif config is None:
        raise ConfigError("Give a run config: tinyvision train CONFIG [key=value ...], or "
                          "--resume runs/NAME.")
    else:
        run = train(config, overrides=list(overrides or []), console=None if quiet else console,
                    progress=not quiet)
    print_summary(run.summary)


# ---- demo ------------------------------------------------------------------------------------
@user_errors
def demo_command(
    runs_dir: Path = typer.Option(Path("runs"), help="Where the run directory goes."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Where to write the generated images (default: RUNS_DIR/demo-data)."),
    per_class: int = typer.Option(1200, min=20, help="Images per class (more: slower, more accurate)."),
    task: str = typer.Option("multiclass", help="multiclass: which shape; detection: which shape "
                             "and its box (class + box head; mean IoU and accuracy at "
                             "IoU>=0.5)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline offline on a generated shapes dataset.

    Writes circle/square/triangle images on noisy textures, trains MobileNet V1 0.25 from scratch,
    evaluates, exports int8 and verifies it on TFLM, then prints a summary table.
    """
    check_choice("--task", task, DEMO_TASKS)
    data_dir = data_dir or runs_dir / "demo-data"
    if not (data_dir / "boxes.csv").is_file():
        console.print(f"writing {3 * per_class} demo images to {data_dir}")
        make_shapes_dataset(data_dir, per_class)
    run = train(demo_config(data_dir.resolve(), runs_dir, task=task),
                console=None if quiet else console, progress=not quiet)
    print_summary(run.summary)


# ---- output ----------------------------------------------------------------------------------
def print_device(app: dict | None, firmware: dict | None, camera: dict | None,
                 fit: BoardFit | None) -> None:
    """The compiled-application check, the firmware, the camera path and the board fit of a
    summary or a verify report, where present."""
    app = app or {}
    if app.get("checked"):
        console.print(f"compiled TFLM application: input tensors and output bytes equal the Python "
                      f"path's on {app['frames']} frames; arena used "
                      f"{app['arena_used_bytes']:,} bytes")
    elif app:
        console.print(f"compiled TFLM application not checked: {escape(app['reason'])}")
    print_firmware(firmware or {})
    if camera:
        key = "accuracy" if "accuracy" in camera["metrics"] else "mean_iou"
        label = "accuracy" if key == "accuracy" else "box mean IoU"
        delta = (camera.get("delta") or {}).get(key, camera.get("accuracy_delta", 0.0))
        console.print(f"camera path ({camera['camera']}): int8 {label} "
                      f"{camera['metrics'].get(key, float('nan')):.4f} vs "
                      f"{camera['training_path'].get(key, float('nan')):.4f} on the "
                      f"training path ({delta:+.4f})")
    if fit is not None:
        console.print(escape(fit_table(fit)), highlight=False)
        console.print(f"for comparison: {PUBLIC_REFERENCES}", highlight=False)


def print_firmware(firmware: dict) -> None:
    """The firmware for the board's core on the emulated core: the check, the ops left on
    reference kernels, a difference from the reference kernels; or why it was not built."""
    if firmware.get("checked"):
        inputs = "int8 inputs equal the Python path's"
        outputs = ("output bytes byte-identical" if firmware["outputs_equal"] else
                   f"[bold yellow]output bytes differ[/]: {escape(firmware['differs'])}")
        console.print(f"{firmware['title']} firmware (CMSIS-NN kernels) on {firmware['emulated']}: "
                      f"{inputs}, {outputs} on {firmware['frames']} frames", highlight=False)
        slow = firmware.get("reference_kernel_ops") or []
        if slow:
            listed = ", ".join(f"{o['op']} {o['share']:.1%}" for o in slow)
            console.print(f"ops on TFLM reference kernels (CMSIS-NN has none), share of the "
                          f"instructions: {escape(listed)}", highlight=False)
    elif firmware:
        console.print(f"firmware not built, flash, RAM and latency are estimates: "
                      f"{escape(firmware['reason'])}", highlight=False)


def _recipe(summary: Summary) -> str:
    """The recipe, and whether the start check switched its fine-tuning (warned below)."""
    switched = (summary.start or {}).get("decision") == "switched"
    return f"{summary.recipe or '-'}{' (switched by the start check)' if switched else ''}"


def print_summary(summary: Summary) -> None:
    """The float and int8 figures side by side, the baselines of a box, sizes, the device side
    and the warnings, at the end of a run."""
    if summary.status == "worker":  # multi_worker, not the chief: the chief prints the run
        console.print(f"worker trained its share of the run in {summary.training['seconds']} s "
                      f"({summary.run}); worker 0 evaluates, exports and registers the run")
        return
    table = Table(title=f"run {summary.run}")
    table.add_column("")
    table.add_column("float (Keras)", justify="right")
    table.add_column("int8 on TFLM", justify="right")
    table.add_column("delta", justify="right")
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro_f1"),
                       ("mean_iou", "box mean_iou"), ("accuracy_iou50", "box accuracy_iou50")):
        float_value, int8_value = summary.float_metrics.get(key), summary.int8.get(key)
        if float_value is not None and int8_value is not None:
            table.add_row(label, f"{float_value:.4f}", f"{int8_value:.4f}",
                          f"{int8_value - float_value:+.4f}")
    baselines = summary.box_baselines or {}
    for name, base in baselines.items():
        table.add_row(f"always the {name.replace('_', ' ')}",
                      f"IoU {base['mean_iou']:.4f}", f"{base['accuracy_iou50']:.0%} >= 0.5", "")
    table.add_row("model bytes", f"{summary.float_bytes:,}", f"{summary.int8_bytes:,}", "")
    table.add_row("tensor arena bytes", "", f"{summary.arena_bytes:,}", "")
    console.print(table)
    images = ", ".join(f"{k} {v}" for k, v in summary.images.items())
    console.print(f"images: {images}; bad images skipped: {summary.bad_images}; "
                  f"recipe {_recipe(summary)}; best epoch {summary.best_epoch}; "
                  f"{summary.seconds} s")
    print_device(summary.app, summary.firmware, summary.camera, summary.fit)
    for warning in summary.warnings:  # said when found; repeated where it is seen
        console.print(f"[bold yellow]warning:[/] {escape(warning['message'])}", highlight=False)


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
    options = {"start": start, "end": end, "steps": steps, "stage": stage, "weights": start_from}
    extra = [f"train.lr_find.{key}={value}" for key, value in options.items() if value is not None]
    cfg = load_config(config, list(overrides or []) + extra)
    settings = cfg.train.lr_find
    if quiet:
        result = lr_find(cfg, progress=False)
    else:
        result = _with_progress(cfg, settings.steps)
    stopped = " (stopped early: the loss exploded)" if result.stopped_early else ""
    console.print(f"swept {len(result.learning_rates)} rates from {settings.start:.1e}{stopped}; "
                  f"plot and CSV in {result.folder}")
    if result.suggestion is None:
        console.print("[yellow]no suggestion:[/] the loss never fell; lower --start or check the "
                      "data and loss.")
    else:
        field = "fine_tune" if settings.stage == "fine_tune" else "head"
        console.print(f"suggested learning rate: [bold]{result.suggestion:.2e}[/] "
                      f"(train.{field}.learning_rate={result.suggestion:.2e})")


def _with_progress(cfg, steps: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=steps, status="")

        def on_step(step: int, rate: float, loss: float) -> None:
            progress.update(task, completed=step + 1, status=f"lr={rate:.2e} loss={loss:.4f}")

        return lr_find(cfg, on_step=on_step)
