"""Build and run the generated TFLM application on the host.

A TFLM C++ source tree (one with `build.sh` and `tflm_flags.mk`, such as the offline tree
tinyvision is tested with) is found from `verify.tflm_source` or `$TINYVISION_TFLM_SOURCE`.
Its library takes minutes to compile, so it is built once per machine into a cache folder keyed
by the tree's content (`~/.cache/tinyvision/tflm/<key>/libtflm.a`, or under
`$TINYVISION_CACHE`), under a file lock so parallel runs share one build.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.errors import VerifyError

log = logging.getLogger("tinyvision")

SOURCE_ENV = "TINYVISION_TFLM_SOURCE"
CACHE_ENV = "TINYVISION_CACHE"
_SKIPPED_PARTS = {"build", "__pycache__", ".git"}


def find_tflm_source(explicit: str | Path | None = None) -> Path | None:
    """The TFLM source tree to build against, or None when none is configured."""
    candidate = explicit or os.environ.get(SOURCE_ENV)
    if not candidate:
        return None
    root = Path(candidate).expanduser().resolve()
    missing = [name for name in ("build.sh", "tflm_flags.mk", "tensorflow") if not (root / name).exists()]
    if missing:
        raise VerifyError(f"{root} is not a TFLM source tree tinyvision can build (missing "
                          f"{', '.join(missing)}); point verify.tflm_source or ${SOURCE_ENV} at a "
                          "tree with build.sh and tflm_flags.mk.")
    return root


def tree_key(root: Path) -> str:
    """A digest of every source file's path and bytes: a changed tree gets a new library."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if _SKIPPED_PARTS & set(relative.parts) or path.suffix in (".o", ".a", ".d"):
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinyvision"


def build_library(root: Path) -> Path:
    """libtflm.a for the tree at `root`, built once into the cache (minutes the first time)."""
    folder = cache_root() / "tflm" / tree_key(root)
    library = folder / "libtflm.a"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        if library.exists():  # another process built it while we waited
            return library
        log.info("building the TFLM library from %s into %s (once per machine, a few minutes)",
                 root, folder)
        result = subprocess.run(["bash", str(root / "build.sh"), str(folder / "build")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise VerifyError(f"building TFLM from {root} failed:\n{result.stderr[-3000:]}")
        os.replace(folder / "build" / "libtflm.a", library)
    return library


@contextmanager
def _locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_app(app_dir: Path, root: Path, library: Path, out_dir: Path) -> Path:
    """Compile export/app against the tree and library; returns the binary."""
    result = subprocess.run(["make", "--no-print-directory", "-C", str(app_dir),
                             f"TFLM_ROOT={root}", f"TFLM_LIB={library}", f"OUT_DIR={out_dir}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise VerifyError(f"compiling the application in {app_dir} failed:\n"
                          f"{(result.stdout + result.stderr)[-3000:]}")
    return out_dir / "app"


@dataclass
class AppRun:
    inputs: np.ndarray  # int8 (frames, input bytes)
    outputs: np.ndarray  # int8 (frames, all output bytes in Keras order)
    arena_used_bytes: int
    printed: str


def run_app(binary: Path, frames: list[bytes], input_bytes: int, output_bytes: int) -> AppRun:
    """Run the compiled application on raw frames; returns what it computed."""
    with tempfile.TemporaryDirectory(prefix="tinyvision-app-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "frames.bin").write_bytes(b"".join(frames))
        result = subprocess.run([str(binary), str(tmp_path / "frames.bin"),
                                 str(tmp_path / "outputs.bin"), str(tmp_path / "inputs.bin")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise VerifyError(f"the compiled application failed (exit {result.returncode}):\n"
                              f"{result.stderr[-2000:]}")
        inputs = np.fromfile(tmp_path / "inputs.bin", dtype=np.int8)
        outputs = np.fromfile(tmp_path / "outputs.bin", dtype=np.int8)
    found = re.search(r"arena_used_bytes: (\d+)", result.stdout)
    if found is None or inputs.size != len(frames) * input_bytes \
            or outputs.size != len(frames) * output_bytes:
        raise VerifyError(f"the compiled application ran but its output is not what tinyvision "
                          f"wrote it to print:\n{result.stdout[-1000:]}")
    return AppRun(inputs.reshape(len(frames), input_bytes), outputs.reshape(len(frames), -1),
                  int(found.group(1)), result.stdout)
