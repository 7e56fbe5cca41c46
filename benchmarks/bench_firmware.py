"""The demo model as firmware on emulated Cortex-M4 and Cortex-M7 cores: measured figures beside the
estimates they replace.

For each core, the run's application is built as firmware (arm-none-eabi-gcc, -Os library, -O2
kernels, linked for QEMU's MPS2 machine) twice, with CMSIS-NN kernels and with TFLM's reference
kernels, and run under `qemu-system-arm -icount shift=0` on seeded frames. Printed: flash by
component (text + data of the linked ELF, split by the map file), static RAM (data + bss), stack
and heap, instructions per inference with each kernel set (the CMSIS-NN speed-up) and per op, the
check against the Python TFLM interpreter, and the fit's previous estimate beside each figure.
Then the calibration of each core's cycles per instruction against a published on-board figure
(the numbers the board profiles hold):

- Cortex-M7: TFLM's person_detect.tflite (MobileNet V1 0.25, 96x96x1; in the TFLM tree) with
  CMSIS-NN at about 30 ms on an STM32H747 at 480 MHz (the figure the profiles' cycles/MAC came
  from);
- Cortex-M4: MLPerf Tiny v1.0, closed division, OctoML's microTVM with CMSIS-NN kernels:
  visual wake words (MobileNet V1 0.25, 96x96x3, the demo model's network) on a NUCLEO-L4R5ZI
  at 120 MHz, median throughput 3.320 inferences/s (301.2 ms; mlcommons/tiny_results_v1.0,
  closed/OctoML/results/microtvm_cmsis_nn/NUCLEO_L4R5ZI/vww/performance/results.txt), set
  against the demo model's CMSIS-NN instructions (without MUL and ADD, were its normalisation
  not folded). (The v0.5 reference submission, TFLM 2.3.1 on the same board, took 600.6 ms;
  against today's reference kernels, 23 times the instructions, it would give an impossible
  0.13 cycles per instruction: it did not run the reference kernels counted here.)

    TINYVISION_TFLM_SOURCE=/path/to/tflm python benchmarks/bench_firmware.py --run runs/demo

Needs the TFLM tree with cortex_m/, the Arm toolchain and qemu-system-arm. The reference-kernel
libraries are built on first use (minutes each) and cached like the others. Instruction counts
are exact and repeatable; they are not timings.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from tinyvision.deploy.app import write_app
from tinyvision.deploy.boards import load_board
from tinyvision.deploy.c_source import write_c_source
from tinyvision.deploy.camera import CameraFormat, make_plan
from tinyvision.deploy.firmware import CORES, build_firmware, run_firmware, unavailable_reason
from tinyvision.deploy.fit import fit_check
from tinyvision.deploy.ops import model_ops
from tinyvision.deploy.runners import find_arena_bytes
from tinyvision.deploy.tflm_build import find_tflm_source
from tinyvision.deploy.verify import verify_firmware
from tinyvision.run.device import app_frames, build_files, camera_format, camera_plan
from tinyvision.run.run import load_run

BOARDS = {"cortex-m4": "stm32l4r5", "cortex-m7": "stm32h743"}
KERNELS = ("cmsis-nn", "reference")
# published on-board figures the cycles per instruction are calibrated against
PERSON_DETECT_MS_M7, M7_MHZ = 30.0, 480.0
MLPERF_VWW_MS_M4, M4_MHZ = 1000 / 3.320, 120.0
NORMALISATION_OPS = ("MUL", "ADD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"),
                        help="an exported (and verified) run folder: `tinyvision demo` makes one")
    parser.add_argument("--frames", type=int, default=2, help="camera frames per firmware run")
    parser.add_argument("--tflm-source", type=Path, default=None)

    args = parser.parse_args()
    root = find_tflm_source(args.tflm_source)
    reason = unavailable_reason("Cortex-M7", root)
    if reason:
        raise SystemExit(f"cannot build the firmware: {reason}")
    cfg, run, manifest = load_run(args.run)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as tmp:
        app_dir, plan, frames, arena = _application(cfg, run, manifest, Path(tmp), args.frames)
        positions = [o["index"] for o in _quantization(run, manifest)["outputs"]]
        for target in BOARDS:
            for kernels in KERNELS:
                print(f"building and running {target} with {kernels} kernels ...", flush=True)
                results[target, kernels] = verify_firmware(
                    app_dir, root, CORES[target], plan, frames, run.int8_model, positions, arena,
                    kernels)
        person = _person_detect_instructions(root, Path(tmp))
    _print(cfg, run, arena, results, person, len(frames))



def _quantization(run, manifest) -> dict:
    from tinyvision.deploy.outputs import tensor_quantization

    return tensor_quantization(run.int8_model, len(manifest.classes))


def _application(cfg, run, manifest, folder: Path, count: int):
    """The run's application written afresh (as verify writes it), its camera plan, seeded
    frames (test images rendered into the camera format, and a random frame) and the arena."""
    from tinyvision.deploy.outputs import tensor_quantization

    quantization = tensor_quantization(run.int8_model, len(manifest.classes))
    q = quantization["input"]
    arena = find_arena_bytes(run.int8_model, np.full(q["shape"][1:], q["zero_point"], np.int8),
                             cfg.verify.max_arena_bytes)
    app_dir = build_files(cfg, run, folder, manifest.classes, manifest.task, arena)
    plan = camera_plan(cfg, quantization)
    tests = [s.path for s in manifest.samples if s.split == "test"]
    return app_dir, plan, app_frames(plan.camera, tests, count, cfg.seed), arena


def _person_detect_instructions(root: Path, folder: Path) -> int:
    """Instructions per inference of TFLM's person_detect.tflite (in the tree) on the emulated
    Cortex-M7 with CMSIS-NN: the count the Cortex-M7's published 30 ms is set against."""
    from tflite_micro import runtime

    model_path = root / "example" / "models" / "person_detect.tflite"
    micro = runtime.Interpreter.from_file(str(model_path), arena_size=1 << 20)
    out = micro.get_output_details(0)
    facts = {"shape": out["shape"].tolist(), "dtype": "int8", "index": 0, "kind": "class",
             "scale": float(out["quantization_parameters"]["scales"][0]),
             "zero_point": int(out["quantization_parameters"]["zero_points"][0])}
    quantization = {"input": {"shape": [1, 96, 96, 1], "dtype": "int8", "scale": 1.0,
                              "zero_point": -128}, "output": facts, "outputs": [facts]}
    target = folder / "person_detect"
    target.mkdir()
    write_c_source(model_path.read_bytes(), target / "model.h", target / "model.cc", "g_model",
                   quantization, ["no_person", "person"])
    ops = ["AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "SOFTMAX"]
    plan = make_plan(CameraFormat("grayscale", 96, 96, "none"), (96, 96, 1), "stretch",
                     "nearest", 1.0, -128)
    app_dir = write_app(target / "app", plan, ops, quantization, "g_model", "model.h",
                        "model.cc", 90_000, ops)
    core = CORES["cortex-m7"]
    elf = build_firmware(app_dir, root, core, target / "build")
    frame = np.random.default_rng(0).integers(0, 256, 96 * 96, dtype=np.uint8).tobytes()
    ran = run_firmware(elf, core, [frame], 96 * 96, 2)
    return int(ran.invoke[0])


def _print(cfg, run, arena: int, results: dict, person: int, frames: int) -> None:
    uses = model_ops(run.int8_model)
    macs = sum(u.macs for u in uses)
    model_bytes = run.int8_model.stat().st_size
    camera = camera_format(cfg) if cfg.deploy.camera is not None else None
    print(f"\nmodel: {run.int8_model} ({model_bytes:,} bytes, {macs:,} MACs, "
          f"{len(uses)} ops); {frames} frames per run; arena {arena:,} bytes (Python TFLM)")
    calibration = _calibration(results, person)
    for target, board_name in BOARDS.items():
        fast, slow = results[target, "cmsis-nn"], results[target, "reference"]
        board = load_board(board_name)
        estimate = fit_check(board, model_bytes, [u.op for u in uses], arena, "Python TFLM",
                             macs, camera)
        measured = fit_check(board, model_bytes, [u.op for u in uses], arena, "Python TFLM",
                             macs, camera, firmware=fast)
        _print_core(target, board, fast, slow, estimate, measured, calibration[target])
    print("\ncalibration of cycles per instruction against published on-board figures:")
    for target, entry in calibration.items():
        print(f"  {target}: {entry['note']}")


def _calibration(results: dict, person: int) -> dict:
    m7 = PERSON_DETECT_MS_M7 * M7_MHZ * 1e3 / person
    counts = results["cortex-m4", "cmsis-nn"]["instructions"]
    network = counts["per_inference"] - sum(
        counts["by_op"].get(op, {}).get("instructions", 0) for op in NORMALISATION_OPS)
    m4 = MLPERF_VWW_MS_M4 * M4_MHZ * 1e3 / network
    return {
        "cortex-m7": {"cpi": m7, "note": (
            f"{m7:.3f} = {PERSON_DETECT_MS_M7:g} ms x {M7_MHZ:g} MHz / {person:,} instructions "
            "(TFLM person_detect, CMSIS-NN, emulated Cortex-M7)")},
        "cortex-m4": {"cpi": m4, "note": (
            f"{m4:.3f} = {MLPERF_VWW_MS_M4:.1f} ms x {M4_MHZ:g} MHz / {network:,} instructions "
            "(the demo network, CMSIS-NN, emulated Cortex-M4; MLPerf Tiny v1.0 VWW, microTVM "
            "with CMSIS-NN on NUCLEO-L4R5ZI)")},
    }


def _print_core(target: str, board, fast: dict, slow: dict, estimate: dict, measured: dict,
                calibration: dict) -> None:
    size, flash = fast["size"], estimate["flash"]
    print(f"\n{target} (board {board.name}, {board.clock_mhz:g} MHz), {fast['emulated']}")
    print(f"  {'':44} {'measured':>12} {'estimate':>12}")
    rows = [("flash: model (C array)", size["flash"]["model"], flash["model"]),
            ("flash: TFLM runtime + reference kernels", size["flash"]["tflm"], None),
            ("flash: CMSIS-NN", size["flash"]["cmsis_nn"], None),
            ("flash: TFLM + CMSIS-NN", size["flash"]["tflm"] + size["flash"]["cmsis_nn"],
             flash["runtime"]),
            ("flash: application + start-up", size["flash"]["application"], None),
            ("flash: C library", size["flash"]["c_library"], None),
            ("flash: application + C library", size["flash"]["application"]
             + size["flash"]["c_library"] + size["flash"]["other"], flash["application"]),
            ("flash: firmware total (text + data)", size["flash"]["total"],
             flash["total"]),
            ("flash: ... with reference kernels", slow["size"]["flash"]["total"], None),
            ("RAM: static (data + bss)", size["ram"]["total"], None),
            ("RAM:   of which tensor arena array", size["arena"], estimate["ram"]["arena"]),
            ("RAM:   of which camera frame buffer", size["frame_buffer"],
             estimate["ram"]["frame_buffer"]),
            ("RAM: stack + heap", fast["stack_bytes"] + fast["heap_bytes"],
             estimate["ram"]["stack_heap"]),
            ("RAM: total (+ board support est.)", measured["ram"]["total"],
             estimate["ram"]["total"]),
            ("arena used on the target", fast["arena_used_bytes"], estimate["ram"]["arena"])]
    for label, value, guess in rows:
        guess_text = f"{guess:>12,}" if guess is not None else f"{'':>12}"
        print(f"  {label:44} {value:>12,} {guess_text}")
    cycles = estimate["macs"] * board.cycles_per_mac
    fast_n, slow_n = fast["instructions"]["per_inference"], slow["instructions"]["per_inference"]
    print(f"  {'instructions/inference, CMSIS-NN':44} {fast_n:>12,} {cycles:>12,.0f}  "
          f"(estimate: cycles = MACs x {board.cycles_per_mac:g})")
    print(f"  {'instructions/inference, reference kernels':44} {slow_n:>12,}")
    print(f"  {'CMSIS-NN speed-up (instructions)':44} {slow_n / fast_n:>12.2f}")
    print(f"  {'instructions per MAC, CMSIS-NN':44} {fast_n / estimate['macs']:>12.2f} "
          f"{board.cycles_per_mac:>12g}")
    print(f"  {'camera preprocessing, instructions':44} "
          f"{fast['instructions']['preprocess']:>12,}")
    latency = fast_n * calibration["cpi"] / (board.clock_mhz * 1e3)
    print(f"  {'latency ms (instr. x calibrated CPI)':44} {latency:>12.1f} "
          f"{estimate['latency_ms']:>12g}")
    same = "byte-identical" if fast["outputs_equal"] else f"DIFFERS: {fast['differs']}"
    same_ref = "byte-identical" if slow["outputs_equal"] else f"DIFFERS: {slow['differs']}"
    print(f"  outputs vs the Python TFLM interpreter: CMSIS-NN {same}; reference {same_ref}")
    print(f"  {'per op (CMSIS-NN build)':28} {'CMSIS-NN':>12} {'reference':>12} {'speed-up':>9}"
          "  kernel")
    for op, entry in fast["instructions"]["by_op"].items():
        ref = slow["instructions"]["by_op"].get(op, {}).get("instructions", 0)
        ratio = f"{ref / entry['instructions']:>9.2f}" if entry["instructions"] else f"{'':>9}"
        print(f"  {op:28} {entry['instructions']:>12,} {ref:>12,} {ratio}  {entry['kernel']}"
              f" ({entry['share']:.1%})")


if __name__ == "__main__":
    main()
