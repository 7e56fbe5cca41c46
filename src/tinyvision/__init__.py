"""tinyvision: labelled images to int8 image models verified on TensorFlow Lite Micro.

The Python API (docs/api.md), what `tinyvision train` and the other commands call:

    import tinyvision
    run = tinyvision.train("snacks.yaml", model={"alpha": 0.5})   # -> tinyvision.Run
    run.summary.int8["accuracy"], run.model, run.predict(["photo.jpg"])
    tinyvision.lr_find("snacks.yaml").suggestion
    tinyvision.runs()                                              # the registry, as records

Names are imported on first use, so `import tinyvision` stays fast (no TensorFlow).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "train": "tinyvision.run.run",
    "resume": "tinyvision.run.run",
    "Run": "tinyvision.run.run",
    "lr_find": "tinyvision.run.run",
    "runs": "tinyvision.run.run",
    "load_config": "tinyvision.config",
    "RunConfig": "tinyvision.config",
}
__all__ = [*_API, "__version__"]

if TYPE_CHECKING:  # for editors and type checkers; at run time the names load lazily
    from tinyvision.config import RunConfig, load_config  # noqa: F401
    from tinyvision.run.run import Run, lr_find, resume, runs, train  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        # `train` shares its name with no module, so caching it here is safe; the package
        # `tinyvision.training` is separate from the function `tinyvision.train`
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tinyvision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
