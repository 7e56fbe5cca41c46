"""Errors a user can cause. Each message names the file, field or value and says how to fix it.

The CLI prints these without a traceback and exits non-zero; anything else is a bug in tinyvision.
"""


class TinyVisionError(Exception):
    """Base class of all errors caused by user input (config, data, models, devices)."""


class ConfigError(TinyVisionError):
    """The YAML config or a command-line override is invalid."""


class DataError(TinyVisionError):
    """Images or annotations are missing, malformed or inconsistent."""


class ModelError(TinyVisionError):
    """A model cannot be built or loaded as configured (weights, sizes, layers)."""


class ExportError(TinyVisionError):
    """A model cannot be converted to the requested format."""


class VerifyError(TinyVisionError):
    """An exported model does not run, or runs differently, on the target runtime."""


class RunError(TinyVisionError):
    """A run directory is missing, incomplete or would be overwritten."""


class RegistryError(TinyVisionError):
    """The run registry (`runs/registry.sqlite`) is missing, locked, newer, or lacks a run."""
