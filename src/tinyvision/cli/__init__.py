"""The `tinyvision` command line: a thin typer layer over the Python API."""

from tinyvision.cli.app import app, main

__all__ = ["app", "main"]
