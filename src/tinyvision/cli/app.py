"""The `tinyvision` app: global options, logging, and the command groups mounted on it.

Errors a user can cause are printed as one message without a traceback (exit code 1).
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.logging import RichHandler

from tinyvision.cli import layers, predict, search, stages, train
from tinyvision.cli.common import err_console
from tinyvision.cli.data import data_app
from tinyvision.cli.quiet import filter_native_stderr
from tinyvision.cli.runs import runs_app

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
    """One module per command group; each only parses and calls the Python API."""
    app.command("train")(train.train_command)
    app.command("lr-find")(train.lr_find_command)
    app.command("demo")(train.demo_command)
    app.command("eval")(stages.eval_command)
    app.command("export")(stages.export_command)
    app.command("verify")(stages.verify_command)
    app.command("fit")(stages.fit_command)
    app.command("search")(search.search_command)
    app.command("report")(stages.report_command)
    app.command("predict")(predict.predict_command)
    app.command("layers")(layers.layers_command)
    app.add_typer(data_app, name="data")
    app.add_typer(runs_app, name="runs")


@app.callback()
def main_options(verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show debug messages, and TensorFlow's own start-up and "
        "converter lines (hidden by default).")) -> None:
    _setup_logging(verbose)
    if not verbose and sys.stderr is sys.__stderr__:  # not under a test runner's capture
        filter_native_stderr()


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
