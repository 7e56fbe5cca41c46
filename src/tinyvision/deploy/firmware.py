"""The generated application as Cortex-M firmware, run on an emulated core: what the board runs,
measured instead of estimated.

    board core (profile)  ->  TARGET of the TFLM tree (CMSIS-NN kernels)  ->  QEMU machine
    Cortex-M7             ->  cortex-m7                                    ->  mps2-an500
    Cortex-M4, M4F        ->  cortex-m4                                    ->  mps2-an386
    Cortex-M3             ->  cortex-m3                                    ->  mps2-an385
    Cortex-M0+            ->  cortex-m0plus (ARMv6-M runs on the M3 machine)

`export/app`'s Makefile builds `app.elf` for the target (its TFLM library cached per machine by
`tflm_build`), linked with the tree's QEMU start-up files and a map file. `run_firmware` runs it
under `qemu-system-arm -icount shift=0` with semihosting: every instruction advances the virtual
clock by 1 ns and SysTick counts the 25 MHz core clock of the MPS2 machines, so one SysTick tick
is exactly 40 instructions, a deterministic count per op. (The Cortex-M55's MPS3 machine, whose
SysTick runs at 32 MHz, is left out: under QEMU 7.2 its semihosting start-up puts the stack below
the heap, so newlib's malloc, and with it fopen, fails there.)
`firmware_size` splits the linked flash (text + data) and static RAM (data + bss) into the model,
TFLM, CMSIS-NN, the application and the C library from the map file. Cores QEMU cannot run
(Xtensa) have no `Core`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.deploy.tflm_build import (CMSIS_NN, REFERENCE, AppRun, build_app, build_library,
                                          check_path, run_app)
from tinyvision.errors import VerifyError

QEMU = "qemu-system-arm"
TOOLS = ("arm-none-eabi-g++", "arm-none-eabi-gcc", "arm-none-eabi-size", QEMU)
INSTALL = ("apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
           "libstdc++-arm-none-eabi-newlib qemu-system-arm")
# QEMU's MPS2 machines clock SysTick at 25 MHz; with -icount shift=0 an instruction is 1 ns
INSTRUCTIONS_PER_TICK = 40
# QEMU runs a frame of the demo model in well under a second with CMSIS-NN, a few seconds with
# reference kernels; a firmware that TFLM aborted loops forever, so the run has a time limit
QEMU_TIMEOUT_S, QEMU_SECONDS_PER_FRAME = 120, 30


@dataclass(frozen=True)
class Core:
    target: str  # TARGET of the TFLM tree's build.sh and tflm_flags.mk
    machine: str  # qemu-system-arm -M
    cpu: str  # qemu-system-arm -cpu
    title: str
    # instructions per SysTick tick: 1 GHz of -icount shift=0 over the machine's core clock
    # (25 MHz on MPS2; 32 MHz on MPS3, measured with a loop of known length)
    per_tick: float = INSTRUCTIONS_PER_TICK

    @property
    def emulated(self) -> str:
        return f"QEMU {self.machine}" + ("" if self.cpu == self.target else f" ({self.cpu})")


CORES = {core.target: core for core in (
    Core("cortex-m0plus", "mps2-an385", "cortex-m3", "Cortex-M0+"),
    Core("cortex-m3", "mps2-an385", "cortex-m3", "Cortex-M3"),
    Core("cortex-m4", "mps2-an386", "cortex-m4", "Cortex-M4"),
    Core("cortex-m7", "mps2-an500", "cortex-m7", "Cortex-M7"),
)}

# The ops whose kernel CMSIS-NN replaces (its file in the tree's cortex_m/kernels_cmsis_nn/);
# every other op of a Cortex-M build runs TFLM's reference kernel.
CMSIS_NN_KERNELS = {
    "ADD": "add", "BATCH_MATMUL": "batch_matmul", "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "depthwise_conv", "FULLY_CONNECTED": "fully_connected",
    "MAXIMUM": "maximum_minimum", "MINIMUM": "maximum_minimum", "MUL": "mul", "PAD": "pad",
    "PADV2": "pad", "AVERAGE_POOL_2D": "pooling", "MAX_POOL_2D": "pooling", "SOFTMAX": "softmax",
    "SVDF": "svdf", "TRANSPOSE": "transpose", "TRANSPOSE_CONV": "transpose_conv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional_sequence_lstm",
}
# Ops that only move or relabel bytes: no kernel to speed up
NO_COMPUTE_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE"})
COMPONENTS = ("model", "tflm", "cmsis_nn", "application", "c_library", "other")
FLASH_SECTIONS = (".text", ".ARM.exidx", ".ARM.extab", ".data")
RAM_SECTIONS = (".data", ".bss")


def core_of(board_core: str) -> Core | None:
    """The emulated core for a board profile's `core` ('Cortex-M4F' -> cortex-m4), or None for
    cores QEMU's Arm machines cannot run (Xtensa, RISC-V, ...)."""
    key = board_core.strip().lower().replace(" ", "").replace("+", "plus")
    key = re.sub(r"^(cortex-m\d+)f$", r"\1", key)
    return CORES.get(key)


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def unavailable_reason(board_core: str, root: Path | None) -> str | None:
    """Why the firmware cannot be built and run for `board_core` here, or None when it can."""
    if core_of(board_core) is None:
        return (f"QEMU cannot run a {board_core} core: its flash, RAM and latency stay "
                "estimates")
    if root is None:
        return "no TFLM source tree (verify.tflm_source or $TINYVISION_TFLM_SOURCE)"
    if not (root / "cortex_m" / "qemu" / "mps2.ld").is_file():
        return f"the TFLM tree {root} has no cortex_m/ (CMSIS-NN, QEMU start-up files)"
    missing = missing_tools()
    if missing:
        return (f"{', '.join(missing)} not found; install the Arm toolchain and QEMU "
                f"(Debian/Ubuntu: {INSTALL}) to build the firmware and run it on an emulated "
                "core")
    return None


def build_firmware(app_dir: Path, root: Path, core: Core, out_dir: Path,
                   kernels: str = CMSIS_NN) -> Path:
    """`app.elf` for `core` in `out_dir` (with `app.map` beside it), against the core's TFLM
    library with CMSIS-NN kernels (or reference kernels: `kernels="reference"`), built once per
    machine into the cache."""
    library = build_library(root, core.target, kernels)
    return build_app(app_dir, root, library, out_dir, target=core.target, kernels=kernels)


@dataclass
class FirmwareRun:
    app: AppRun  # inputs, outputs, arena_used_bytes, what it printed
    op_names: list[str]  # in execution order
    preprocess: np.ndarray  # int64 (frames,): instructions of tv_preprocess
    invoke: np.ndarray  # int64 (frames,): instructions of Invoke()
    ops: np.ndarray  # int64 (frames, ops): instructions of each op
    stack_bytes: int
    heap_bytes: int
    per_tick: float = INSTRUCTIONS_PER_TICK


def run_firmware(elf: Path, core: Core, frames: list[bytes], input_bytes: int,
                 output_bytes: int) -> FirmwareRun:
    """Run the firmware on `frames` under QEMU; returns what it computed and counted."""
    check_path(elf, "the firmware", "build it in such a folder")

    def command(frames_path: Path, outputs: Path, inputs: Path) -> list[str]:
        arguments = ",".join(f"arg={a}" for a in ("app", frames_path, outputs, inputs))
        return [QEMU, "-M", core.machine, "-cpu", core.cpu, "-nographic", "-monitor", "none",
                "-serial", "none", "-icount", "shift=0",
                "-semihosting-config", f"enable=on,target=native,{arguments}", "-kernel", str(elf)]

    ran = run_app(elf, frames, input_bytes, output_bytes, command=command,
                  what=f"the firmware on {core.emulated}",
                  timeout=QEMU_TIMEOUT_S + QEMU_SECONDS_PER_FRAME * len(frames))
    return parse_counts(ran, len(frames), core.per_tick)


def parse_counts(ran: AppRun, frames: int, per_tick: float = INSTRUCTIONS_PER_TICK
                 ) -> FirmwareRun:
    """The counts the firmware printed (op_names, one `ticks` line per frame, stack and heap),
    as instructions (`per_tick` instructions a tick)."""
    text = ran.printed
    names = re.search(r"^op_names:(.*)$", text, re.M)
    rows = re.findall(r"^ticks (\d+): preprocess (\d+) invoke (\d+) ops((?: \d+)*)$", text, re.M)
    stack = re.search(r"^stack_used_bytes: (\d+)$", text, re.M)
    heap = re.search(r"^heap_used_bytes: (\d+)$", text, re.M)
    if names is None or len(rows) != frames or stack is None or heap is None:
        raise VerifyError(f"the firmware ran but did not print its instruction counts as "
                          f"tinyvision wrote it to:\n{text[-1000:]}")
    op_names = names.group(1).split()
    ops = np.asarray([[int(v) for v in row[3].split()] for row in rows], np.int64)
    if ops.shape != (frames, len(op_names)):
        raise VerifyError(f"the firmware printed {ops.shape[-1]} op counts for "
                          f"{len(op_names)} ops")
    def instructions(ticks) -> np.ndarray:
        return np.rint(np.asarray(ticks, np.float64) * per_tick).astype(np.int64)

    return FirmwareRun(ran, op_names, instructions([int(r[1]) for r in rows]),
                       instructions([int(r[2]) for r in rows]), instructions(ops),
                       int(stack.group(1)), int(heap.group(1)), per_tick)


def instruction_counts(run: FirmwareRun, root: Path | None = None,
                       kernels: str = CMSIS_NN) -> dict:
    """Instructions per inference (median over the frames, and the range), of the
    preprocessing, and per op (in execution order and summed by op type), each op with its
    kernel: CMSIS-NN where the tree has one (in a CMSIS-NN build), else TFLM's reference
    kernel."""
    per_op = run.ops.mean(axis=0)
    by_type: dict[str, float] = defaultdict(float)
    for name, count in zip(run.op_names, per_op):
        by_type[name] += float(count)
    total = float(np.median(run.invoke))
    kernel = {name: kernel_of(name, root) if kernels == CMSIS_NN else REFERENCE
              for name in by_type}
    return {
        "per_inference": int(round(total)),
        "min": int(run.invoke.min()), "max": int(run.invoke.max()),
        "preprocess": int(round(float(np.median(run.preprocess)))),
        "ops": [{"op": name, "instructions": int(round(float(count)))}
                for name, count in zip(run.op_names, per_op)],
        "by_op": {name: {"instructions": int(round(count)), "kernel": kernel[name],
                         "share": round(count / total, 4) if total else 0.0}
                  for name, count in sorted(by_type.items(), key=lambda kv: -kv[1])},
        "per_tick": run.per_tick,
    }


def kernel_of(op: str, root: Path | None = None) -> str:
    """'cmsis-nn' when CMSIS-NN replaces the op's kernel (and the tree has its file), else
    'reference'."""
    stem = CMSIS_NN_KERNELS.get(op)
    if stem is None:
        return REFERENCE
    if root is not None and not (root / "cortex_m" / "kernels_cmsis_nn" / f"{stem}.cc").is_file():
        return REFERENCE
    return CMSIS_NN


def reference_kernel_ops(counts: dict) -> list[dict]:
    """The ops that compute on a reference kernel because CMSIS-NN has none, with their share of
    the instructions (ops that only move bytes left out)."""
    return [{"op": op, "instructions": entry["instructions"], "share": entry["share"]}
            for op, entry in counts["by_op"].items()
            if entry["kernel"] == "reference" and op not in NO_COMPUTE_OPS]


# ---- flash and RAM from the linked firmware -----------------------------------------------------
def firmware_size(elf: Path) -> dict:
    """Flash (text + data) and static RAM (data + bss) of the linked firmware, each split by
    component from the map file beside it; the arena and frame buffer arrays in bss."""
    sections = map_sections(elf.with_suffix(".map"))
    flash: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
    ram: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
    arrays = {"arena": 0, "frame_buffer": 0}
    for output, name, size, source in sections:
        component = component_of(source)
        if output in FLASH_SECTIONS:
            flash[component] += size
        if output in RAM_SECTIONS:
            ram[component] += size
        if output == ".bss" and "g_arena" in name:
            arrays["arena"] += size
        if output == ".bss" and "g_frame" in name:
            arrays["frame_buffer"] += size
    totals = section_totals(elf)
    flash_total = sum(totals.get(s, 0) for s in FLASH_SECTIONS)
    ram_total = sum(totals.get(s, 0) for s in RAM_SECTIONS)
    flash["other"] += flash_total - sum(flash.values())
    ram["other"] += ram_total - sum(ram.values())
    return {"flash": {**flash, "total": flash_total}, "ram": {**ram, "total": ram_total},
            "text": totals.get(".text", 0) + totals.get(".ARM.exidx", 0),
            "data": totals.get(".data", 0), "bss": totals.get(".bss", 0), **arrays}


def component_of(source: str) -> str:
    """The component of an input file of the link, as the map file names it."""
    name = Path(source.split("(")[0]).name
    member = source[source.index("(") + 1:-1] if source.endswith(")") and "(" in source else ""
    if name == "model.o":
        return "model"
    if name in ("main.o", "camera_preprocess.o", "vectors.o"):
        return "application"
    if name == "libtflm.a":
        return "cmsis_nn" if member.startswith("arm_") else "tflm"
    if not source:
        return "other"
    return "c_library"


_OUTPUT = re.compile(r"^(\.[\w.]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)")
_INPUT = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*(.*)$")


def map_sections(map_path: Path) -> list[tuple[str, str, int, str]]:
    """(output section, input section, bytes, input file) of every input section of a GNU ld
    map file's memory map. A name too long for its column continues on the next line; merged
    strings (`.rodata.*.str1.1`, which the map lists at their size before merging) count only up
    to where the next input section starts."""
    try:
        text = map_path.read_text(errors="replace")
    except OSError as exc:
        raise VerifyError(f"cannot read the firmware's map file {map_path}: {exc.strerror}") from None
    start = text.find("Linker script and memory map")
    lines = text[start:].splitlines() if start >= 0 else []
    entries, output, pending = [], "", ""
    for line in lines:
        if pending:  # keeps its indentation: an output section's name starts the line
            line, pending = pending + " " + line.strip(), ""
        if re.match(r"^ ?\S+$", line) and not line.startswith(" *("):
            pending = line  # a long name: its address and size follow on the next line
            continue
        found = _OUTPUT.match(line)
        if found:
            output = found.group(1)
            continue
        found = _INPUT.match(line)
        if found and not found.group(1).startswith("*("):
            name, address, size = found.group(1), int(found.group(2), 16), int(found.group(3), 16)
            entries.append((output, address, size, name, found.group(4).strip()))
    entries.sort(key=lambda e: (e[0], e[1], -e[2]))  # at one address, the largest first
    out = []
    for k, (output, address, size, name, source) in enumerate(entries):
        if k and entries[k - 1][:2] == (output, address):
            size = 0  # merged into the largest section at this address
        else:
            later = next((e for e in entries[k + 1:] if e[0] != output or e[1] > address), None)
            if later is not None and later[0] == output:
                size = min(size, later[1] - address)  # merged strings overlap the next one
        out.append((output, name, size, source))
    return out


def section_totals(elf: Path) -> dict[str, int]:
    """Section sizes of the ELF (`arm-none-eabi-size -A`)."""
    from tinyvision.deploy.tflm_build import run_group

    result = run_group(["arm-none-eabi-size", "-A", "-d", str(elf)], f"sizing {elf}", 60)
    if result.returncode != 0:
        raise VerifyError(f"arm-none-eabi-size failed on {elf}: {result.stderr[-500:]}")
    totals = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            totals[parts[0]] = int(parts[1])
    return totals


def temporary_build_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="tinyvision-firmware-")
