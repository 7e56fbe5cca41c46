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


class ImageTooLargeError(DataError):
    """An image over the pixel limit (likely a decompression bomb); refused, never decoded."""


class DiskFullError(DataError):
    """The disk has no room for a file tinyvision must write (the image cache)."""


class ExportError(TinyVisionError):
    """A model cannot be converted to the requested format."""


class VerifyError(TinyVisionError):
    """An exported model does not run, or runs differently, on the target runtime."""


class RunError(TinyVisionError):
    """A run directory is missing, incomplete or would be overwritten."""


class RegistryError(TinyVisionError):
    """The run registry (`runs/registry.sqlite`) is missing, locked, newer, or lacks a run."""


def did_you_mean(value: object, options, n: int = 1, cutoff: float = 0.6,
                 aside: bool = False) -> str:
    """" Did you mean 'x'?" (up to `n` close matches of `value` among `options`), or "" when
    none is close; with `aside`, " (did you mean 'x'?)" for the middle of a sentence. The one
    place tinyvision makes close-match hints."""
    import difflib

    close = difflib.get_close_matches(str(value), sorted(map(str, options)), n=n, cutoff=cutoff)
    if not close:
        return ""
    listed = ", ".join(repr(c) for c in close)
    return f" (did you mean {listed}?)" if aside else f" Did you mean {listed}?"


def check_choice(name: str, value: str, allowed) -> str:
    """`value` if it is in `allowed`, else a ConfigError with the allowed values and a close match."""
    if value not in allowed:
        raise ConfigError(f"Expected {name} to be one of {sorted(allowed)}, received "
                          f"{name}={value!r}.{did_you_mean(value, allowed)}")
    return value
