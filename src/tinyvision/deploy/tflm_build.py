"""Build and run the generated TFLM application on the host.

A TFLM C++ source tree (one with `build.sh` and `tflm_flags.mk`, such as the offline tree
tinyvision is tested with) is found from `verify.tflm_source` or `$TINYVISION_TFLM_SOURCE`.
Its library takes minutes to compile, so it is built once per machine into a cache folder keyed
by the tree's content and the toolchain (`~/.cache/tinyvision/tflm/<key>/libtflm.a`, or under
`$TINYVISION_CACHE`), under a file lock so parallel runs share one build. A build runs in a private
folder that is renamed into place, and the library's digest is written last: a killed or damaged
build is never taken for a library. Every build and run is a process group of its own, killed
whole on a timeout or an interruption, so no compiler outlives tinyvision.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.errors import VerifyError
from tinyvision.files import process_alive

log = logging.getLogger("tinyvision")

SOURCE_ENV = "TINYVISION_TFLM_SOURCE"
CACHE_ENV = "TINYVISION_CACHE"
LIBRARY = "libtflm.a"
MARKER = "libtflm.a.sha256"  # the library's digest, written last: no marker, no library
BUILD_TIMEOUT_S = 3600  # the library: about 6 minutes on 2 cores
COMPILE_TIMEOUT_S = 600  # the application against the library
RUN_TIMEOUT_S = 600  # the application on a few frames
CMSIS_NN, REFERENCE = "cmsis-nn", "reference"  # the kernels of a Cortex-M library
CORTEX_M_CXX = "arm-none-eabi-g++"  # tflm_flags.mk's compiler for every Cortex-M target
_SKIPPED_PARTS = {"build", "__pycache__", ".git"}
# what make and the compiler lines take as one word, unquoted: no space, quote, $, #, ;, ...
_SAFE_PATH = re.compile(r"^[\w/.+@-]+$")
_STAGING = re.compile(r"^\.(?P<key>[0-9a-f]+)\.(?P<pid>\d+)\.build-")


def find_tflm_source(explicit: str | Path | None = None) -> Path | None:
    """The TFLM source tree to build against, or None when none is configured. The tree, the
    library cache and the temporary build folders must be paths make can take (`check_path`)."""
    candidate = explicit or os.environ.get(SOURCE_ENV)
    if not candidate:
        return None
    root = Path(candidate).expanduser().resolve()
    check_path(root, "the TFLM source tree", f"point verify.tflm_source or ${SOURCE_ENV} at a "
               "copy of the tree in such a folder")
    missing = [name for name in ("build.sh", "tflm_flags.mk", "tensorflow") if not (root / name).exists()]
    if missing:
        raise VerifyError(f"{root} is not a TFLM source tree tinyvision can build (missing "
                          f"{', '.join(missing)}); point verify.tflm_source or ${SOURCE_ENV} at a "
                          "tree with build.sh and tflm_flags.mk.")
    check_path(cache_root(), "the TFLM library cache", f"set ${CACHE_ENV} to such a folder")
    check_path(Path(tempfile.gettempdir()), "the temporary folder (where the application is "
               "built)", "set $TMPDIR to such a folder")
    return root


def check_path(path: Path, what: str, fix: str) -> Path:
    """`path` if make and the compiler can take it as it is; else a VerifyError naming it. Make
    splits words on spaces and the shell runs `$(...)` in a recipe, so a path with a space, a
    quote or a shell character could fail the build after the whole training, or run a command."""
    if not _SAFE_PATH.match(str(path)):
        raise VerifyError(f"{what} {str(path)!r} has a character that make or the compiler's "
                          "command line would split or run (a space, quote, $, ...): use a path "
                          f"of letters, digits and / . _ + @ - only; {fix}.")
    return path


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


def toolchain(target: str | None = None, kernels: str = CMSIS_NN) -> dict:
    """What build.sh compiles with: the target (`target`, else $TARGET, else host), the compiler
    (host: $CXX or g++; Cortex-M: arm-none-eabi-g++, which tflm_flags.mk fixes) and its own
    version line, $EXTRA_CXXFLAGS, and for Cortex-M reference kernels in place of CMSIS-NN: a
    change of any of them is a different library."""
    target = target or os.environ.get("TARGET") or "host"
    cxx = (os.environ.get("CXX") or "g++") if target == "host" else CORTEX_M_CXX
    found = {"cxx": shutil.which(cxx) or cxx, "version": _compiler_version(cxx), "target": target,
             "extra_cxxflags": os.environ.get("EXTRA_CXXFLAGS", "")}
    if target != "host" and kernels != CMSIS_NN:
        found["kernels"] = kernels
    return found


def _compiler_version(cxx: str) -> str:
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    return (done.stdout.strip().splitlines() or [""])[0]


def build_key(root: Path, target: str | None = None, kernels: str = CMSIS_NN) -> str:
    """The cache key of the library of the tree at `root` built with today's toolchain."""
    digest = hashlib.sha256(tree_key(root).encode())
    for name, value in sorted(toolchain(target, kernels).items()):
        digest.update(f"\0{name}={value}".encode())
    return digest.hexdigest()[:20]


def build_library(root: Path, target: str | None = None, kernels: str = CMSIS_NN) -> Path:
    """libtflm.a for the tree at `root`, built once into the cache (minutes the first time): for
    the host, or for a Cortex-M core (`target`, e.g. cortex-m7) with CMSIS-NN kernels, or with
    TFLM's reference kernels (`kernels="reference"`, to measure what CMSIS-NN gains)."""
    folders = cache_root() / "tflm"
    key = build_key(root, target, kernels)
    folder = folders / key
    if _verified(folder):
        return folder / LIBRARY
    folders.mkdir(parents=True, exist_ok=True)
    with _locked(folders / f"{key}.lock"):
        if _verified(folder):  # another process built it while we waited
            return folder / LIBRARY
        _remove_dead_builds(folders, key)
        log.info("building the TFLM library (%s) from %s into %s (once per machine, a few "
                 "minutes)", target or os.environ.get("TARGET") or "host", root, folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}.build-", dir=folders))
        try:
            _build_into(root, staging, target, kernels)
            if folder.exists():  # a library that failed its check: replaced whole
                shutil.rmtree(folder)
            os.rename(staging / "done", folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder / LIBRARY


def _build_into(root: Path, staging: Path, target: str | None, kernels: str) -> None:
    """build.sh into `staging/build`; the library and, last, its digest into `staging/done`."""
    env = dict(os.environ)
    if target:
        env["TARGET"] = target
    if target not in (None, "host") and kernels == REFERENCE:
        # tflm.mk swaps CMSIS-NN in for every Cortex-M target; emptying its lists (as command-line
        # variables, which MAKEFLAGS carries through build.sh) keeps TFLM's reference kernels
        env["MAKEFLAGS"] = "CMSIS_KERNELS= C_SRCS="
    result = run_group(["bash", str(root / "build.sh"), str(staging / "build")],
                       f"building TFLM ({target or 'host'}) from {root}", BUILD_TIMEOUT_S, env=env)
    built = staging / "build" / LIBRARY
    if result.returncode != 0 or not built.is_file():
        raise VerifyError(f"building TFLM from {root} failed (exit {result.returncode}):\n"
                          f"{result.stderr[-3000:]}")
    done = staging / "done"
    done.mkdir()
    os.replace(built, done / LIBRARY)
    (done / MARKER).write_text(_digest(done / LIBRARY) + "\n")


def _verified(folder: Path) -> bool:
    """Whether `folder` holds a library whose digest is the one its marker recorded."""
    library, marker = folder / LIBRARY, folder / MARKER
    try:
        return marker.read_text().strip() == _digest(library)
    except OSError:
        return False


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_dead_builds(folders: Path, key: str) -> None:
    """Private build folders of `key` whose process is gone (killed with SIGKILL, power loss)."""
    for path in folders.glob(f".{key}.*.build-*"):
        match = _STAGING.match(path.name)
        if match and not process_alive(int(match.group("pid"))):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _locked(path: Path):
    """An exclusive lock on `path`, opened without following a symbolic link (in a shared cache
    folder, a link planted there would make us create or lock another file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VerifyError(f"the TFLM build lock {path} is a symbolic link; tinyvision never "
                              "follows one there. Remove it (and check who made it).") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_group(command: list[str], what: str, timeout: float, **kwargs
              ) -> subprocess.CompletedProcess:
    """Run `command` as a process group of its own, output captured. On a timeout (a
    VerifyError) or an interruption (Ctrl-C, SIGTERM), the whole group is killed: a build
    script's compilers die with it instead of running on, orphaned."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise VerifyError(f"{what} did not finish in {timeout:g} s; it was stopped.") from None
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def build_app(app_dir: Path, root: Path, library: Path, out_dir: Path, target: str = "host",
              kernels: str = CMSIS_NN) -> Path:
    """Compile export/app against the tree and library; returns the binary (`app`, or for a
    Cortex-M target the firmware `app.elf` with `app.map` beside it). The Makefile names its own
    files relative to `app_dir`; the paths given to make must pass `check_path`."""
    for path, what in ((app_dir, "the application folder"), (root, "the TFLM source tree"),
                       (library, "the TFLM library"), (out_dir, "the build folder")):
        check_path(path, what, "move it to such a folder")
    result = run_group(["make", "--no-print-directory", "-C", str(app_dir), f"TFLM_ROOT={root}",
                        f"TFLM_LIB={library}", f"OUT_DIR={out_dir}", f"TARGET={target}",
                        f"KERNELS={kernels}"],
                       f"compiling the application in {app_dir} ({target})", COMPILE_TIMEOUT_S)
    if result.returncode != 0:
        raise VerifyError(f"compiling the application in {app_dir} ({target}) failed:\n"
                          f"{(result.stdout + result.stderr)[-3000:]}")
    return out_dir / ("app" if target == "host" else "app.elf")


@dataclass
class AppRun:
    inputs: np.ndarray  # int8 (frames, input bytes)
    outputs: np.ndarray  # int8 (frames, all output bytes in Keras order)
    arena_used_bytes: int
    printed: str


def run_app(binary: Path, frames: list[bytes], input_bytes: int, output_bytes: int,
            command=None, what: str = "the compiled application",
            timeout: float = RUN_TIMEOUT_S) -> AppRun:
    """Run the compiled application on raw frames; returns what it computed. `command(frames,
    outputs, inputs)` gives the command line (default: the binary itself, on the host)."""
    with tempfile.TemporaryDirectory(prefix="tinyvision-app-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "frames.bin").write_bytes(b"".join(frames))
        paths = (tmp_path / "frames.bin", tmp_path / "outputs.bin", tmp_path / "inputs.bin")
        line = command(*paths) if command else [str(binary), *map(str, paths)]
        result = run_group(line, what, timeout)
        if result.returncode != 0:
            raise VerifyError(f"{what} failed (exit {result.returncode}):\n"
                              f"{(result.stdout[-1000:] + result.stderr[-2000:]).strip()}")
        inputs = np.fromfile(paths[2], dtype=np.int8) if paths[2].exists() else np.zeros(0)
        outputs = np.fromfile(paths[1], dtype=np.int8) if paths[1].exists() else np.zeros(0)
    found = re.search(r"arena_used_bytes: (\d+)", result.stdout)
    if found is None or inputs.size != len(frames) * input_bytes \
            or outputs.size != len(frames) * output_bytes:
        raise VerifyError(f"{what} ran but its output is not what tinyvision wrote it to "
                          f"print:\n{result.stdout[-1000:]}")
    return AppRun(inputs.reshape(len(frames), input_bytes), outputs.reshape(len(frames), -1),
                  int(found.group(1)), result.stdout)
