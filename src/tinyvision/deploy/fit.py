"""Does the int8 model fit the board? Flash and RAM against the board's, and the latency.

Where the firmware was built for the board's core and run on the emulated core (`firmware.py`),
the figures are measured: flash = text + data of the linked firmware split by component, static
RAM = data + bss (the arena and the frame buffer arrays among them) plus the stack and heap it
used, instructions per inference counted under QEMU; the latency is those instructions x the
board profile's cycles per instruction (calibrated per core against a published on-board figure,
named in the profile) / clock. Only the board's own HAL and camera driver stay an estimate.

Elsewhere (no Arm toolchain or tree, a core QEMU cannot run) the figures are estimates for a
Cortex-M build with -Os and CMSIS-NN kernels: model + TFLM runtime for the ops used +
application margin; arena + frame buffer + stack/heap margin; MACs x cycles/MAC / clock. Every
table says which figures are which. The arena is measured either way: by the compiled
application when verify built it (`arena_used_bytes()`), else by the Python TFLM interpreter
(which counts about 250 bytes of its own bookkeeping, so it errs on the safe side).
"""

from __future__ import annotations

from tinyvision.deploy.boards import Board
from tinyvision.deploy.camera import CameraFormat
from tinyvision.records import BoardFit, FitEstimate

# TFLM's interpreter, allocator, flatbuffer reader and error reporting
TFLM_CORE_FLASH_BYTES = 40 * 1024
# kernel code per op, CMSIS-NN variants where they exist; ops not listed: the default
OP_FLASH_BYTES = {
    "CONV_2D": 10 * 1024, "DEPTHWISE_CONV_2D": 10 * 1024, "FULLY_CONNECTED": 5 * 1024,
    "TRANSPOSE_CONV": 6 * 1024, "ADD": 5 * 1024, "MUL": 4 * 1024, "MEAN": 4 * 1024,
    "SOFTMAX": 4 * 1024, "AVERAGE_POOL_2D": 3 * 1024, "MAX_POOL_2D": 3 * 1024,
    "HARD_SWISH": 3 * 1024, "LOGISTIC": 2560, "PAD": 2560, "CONCATENATION": 2560,
    "QUANTIZE": 2560, "DEQUANTIZE": 2048, "RELU": 1536, "RELU6": 1536, "RESHAPE": 1024,
}
DEFAULT_OP_FLASH_BYTES = 4 * 1024
APPLICATION_FLASH_BYTES = 32 * 1024  # start-up code, HAL, camera driver, printf
STACK_HEAP_BYTES = 24 * 1024  # stack, heap and the application's own globals
ESTIMATE = "estimate"
MEASURED = "measured"
# beside the firmware built here, a board's own HAL and camera driver (DCMI/DMA, clocks, GPIO)
BOARD_SUPPORT_FLASH_BYTES = 16 * 1024
BOARD_SUPPORT_RAM_BYTES = 4 * 1024
# public int8 models of the same kind, printed beside a fit for scale
PUBLIC_REFERENCES = ("TFLM person_detect.tflite (MobileNet V1 0.25, 96x96x1): 300,568 bytes; "
                     "MLPerf Tiny visual wake words int8: 334.2 kB model, 156 KB runtime memory")


def fit_check(board: Board, model_bytes: int, ops: list[str], arena_bytes: int,
              arena_source: str, macs: int, camera: CameraFormat | None,
              firmware: dict | None = None) -> BoardFit:
    """The fit of one model on one board, as `summary.json` and the report keep it: from
    `firmware` (verify's measured figures of the firmware built for the board's core) where
    given, else estimated. A measured fit keeps the estimate beside it (`estimate`)."""
    fit = _estimated_fit(board, model_bytes, ops, arena_bytes, arena_source, macs, camera)
    if firmware and firmware.get("checked"):
        estimate = FitEstimate(flash=fit.flash["total"], ram=fit.ram["total"],
                               latency_ms=fit.latency_ms, cycles_per_mac=fit.cycles_per_mac)
        fit = _measured_fit(fit, board, firmware)
        fit.estimate = estimate
    fit.advice = _advice(fit)
    return fit


def _estimated_fit(board: Board, model_bytes: int, ops: list[str], arena_bytes: int,
                   arena_source: str, macs: int, camera: CameraFormat | None) -> BoardFit:
    unique = sorted(set(ops))
    runtime = TFLM_CORE_FLASH_BYTES + sum(OP_FLASH_BYTES.get(op, DEFAULT_OP_FLASH_BYTES)
                                          for op in unique)
    flash_total = model_bytes + runtime + APPLICATION_FLASH_BYTES
    frame = camera.frame_bytes if camera is not None else 0
    ram_total = arena_bytes + frame + STACK_HEAP_BYTES
    block = board.largest_ram_block_bytes
    flash_fits = flash_total <= board.flash_bytes
    ram_fits = ram_total <= board.ram_bytes and (block is None or max(arena_bytes, frame) <= block)
    latency_ms = macs * board.cycles_per_mac / (board.clock_mhz * 1e3)
    return BoardFit(
        board=board.name, title=board.title, core=board.core,
        clock_mhz=board.clock_mhz, basis=ESTIMATE,
        flash={"model": model_bytes, "runtime": runtime, "runtime_ops": unique,
               "application": APPLICATION_FLASH_BYTES, "total": flash_total,
               "available": board.flash_bytes, "fits": flash_fits, "measured": False},
        ram={"arena": arena_bytes, "arena_source": arena_source, "frame_buffer": frame,
             "camera": camera.describe() if camera is not None else None,
             "stack_heap": STACK_HEAP_BYTES, "total": ram_total, "available": board.ram_bytes,
             "largest_block": block, "fits": ram_fits, "measured": False},
        macs=macs, cycles_per_mac=board.cycles_per_mac,
        latency_ms=float(f"{latency_ms:.3g}"), latency_basis="macs",
        latency_note=f"{ESTIMATE}: MACs x cycles/MAC / clock "
                     f"({board.sources.get('cycles_per_mac', 'board profile')})",
        fits=flash_fits and ram_fits,
    )


def _measured_fit(fit: BoardFit, board: Board, firmware: dict) -> BoardFit:
    """`fit` with the firmware's measured flash, RAM and instructions in place of estimates."""
    size, counts = firmware["size"], firmware["instructions"]
    parts = {k: size["flash"][k] for k in ("model", "tflm", "cmsis_nn", "application",
                                           "c_library", "other")}
    flash_total = size["flash"]["total"] + BOARD_SUPPORT_FLASH_BYTES
    fit.flash = {**parts, "firmware": size["flash"]["total"],
                    "board_support": BOARD_SUPPORT_FLASH_BYTES, "total": flash_total,
                    "runtime": parts["tflm"] + parts["cmsis_nn"],
                    "runtime_ops": fit.flash["runtime_ops"], "available": board.flash_bytes,
                    "fits": flash_total <= board.flash_bytes, "measured": True}
    stack, heap = firmware["stack_bytes"], firmware["heap_bytes"]
    ram_total = size["ram"]["total"] + stack + heap + BOARD_SUPPORT_RAM_BYTES
    block = board.largest_ram_block_bytes
    fit.ram = {"static": size["ram"]["total"], "arena": firmware["arena_used_bytes"],
                  "arena_source": f"{firmware['title']} firmware", "arena_reserved": size["arena"],
                  "frame_buffer": size["frame_buffer"], "camera": fit.ram["camera"],
                  "stack": stack, "heap": heap, "stack_heap": stack + heap,
                  "board_support": BOARD_SUPPORT_RAM_BYTES, "total": ram_total,
                  "available": board.ram_bytes, "largest_block": block,
                  "fits": ram_total <= board.ram_bytes and (
                      block is None or max(size["arena"], size["frame_buffer"]) <= block),
                  "measured": True}
    instructions = counts["per_inference"]
    fit.basis = MEASURED
    fit.firmware = {"core": firmware["core"], "title": firmware["title"],
                       "emulated": firmware["emulated"], "frames": firmware["frames"],
                       "byte_identical": bool(firmware.get("outputs_equal")),
                       "instructions": instructions, "preprocess": counts["preprocess"],
                       "per_mac": round(instructions / fit.macs, 2) if fit.macs else None}
    cpi = board.cycles_per_instruction
    if cpi is not None:
        fit.cycles_per_instruction = cpi
        fit.latency_ms = float(f"{instructions * cpi / (board.clock_mhz * 1e3):.3g}")
        fit.latency_basis = "instructions"
        fit.latency_note = (f"instructions ({MEASURED} on the emulated {firmware['title']}) x "
                               f"cycles/instruction / clock (cycles/instruction: "
                               f"{board.sources.get('cycles_per_instruction', 'board profile')})")
    fit.fits = fit.flash["fits"] and fit.ram["fits"]
    return fit


def _advice(fit: BoardFit) -> list[str]:
    advice = []
    flash, ram = fit.flash, fit.ram
    if not flash["fits"]:
        over = flash["total"] - flash["available"]
        advice.append(f"flash is {over:,} bytes over: a smaller model.alpha (weights grow with "
                      "alpha squared), a smaller backbone (mobilenet_v1 0.25, plain_cnn), or "
                      "fewer classes")
    if not ram["fits"]:
        over = ram["total"] - ram["available"]
        block = ram["largest_block"]
        if over > 0:
            advice.append(f"RAM is {over:,} bytes over")
        arena = ram.get("arena_reserved", ram["arena"])
        if block is not None and max(arena, ram["frame_buffer"]) > block:
            advice.append(f"the largest RAM block holds {block:,} bytes: the arena "
                          f"({arena:,}) and the frame buffer ({ram['frame_buffer']:,}) "
                          "must each fit one")
        advice.append("the arena grows with the input area: a smaller model.input_size, "
                      "model.color_mode: grayscale (a third of the input), or a smaller "
                      "model.alpha; a smaller or grayscale camera frame shrinks the frame buffer")
    return advice


def fit_rows(fit: BoardFit) -> list[tuple[str, int | str, int | str, str]]:
    """The fit's rows (label, bytes, board's bytes, verdict), each labelled measured or estimate:
    the plain-text table's and the report's."""
    flash, ram = fit.flash, fit.ram
    if not flash.get("measured"):
        return [("flash", "", "", ""),
                ("  model (C array)", flash["model"], "", ""),
                (f"  TFLM runtime, {len(flash['runtime_ops'])} ops ({ESTIMATE})", flash["runtime"],
                 "", ""),
                (f"  application ({ESTIMATE})", flash["application"], "", ""),
                ("  total", flash["total"], flash["available"], _verdict(flash)),
                ("RAM", "", "", ""),
                (f"  tensor arena ({ram['arena_source']})", ram["arena"], "", ""),
                (f"  camera frame buffer ({ram['camera'] or 'no camera'})", ram["frame_buffer"],
                 "", ""),
                (f"  stack, heap, globals ({ESTIMATE})", ram["stack_heap"], "", ""),
                ("  total", ram["total"], ram["available"], _verdict(ram))]
    title = fit.firmware["title"]
    rows = [(f"flash ({MEASURED}, linked {title} firmware)", "", "", "")]
    rows += [(f"  {FLASH_TITLES[key]}", flash[key], "", "") for key in FLASH_TITLES
             if flash.get(key) or key != "other"]
    rows += [(f"  HAL, camera driver ({ESTIMATE})", flash["board_support"], "", ""),
             ("  total", flash["total"], flash["available"], _verdict(flash)),
             (f"RAM ({MEASURED} on the emulated {title})", "", "", ""),
             ("  static: data + bss", ram["static"], "", ""),
             ("    tensor arena", ram["arena_reserved"], "", ""),
             (f"    frame buffer ({ram['camera'] or 'input size'})", ram["frame_buffer"], "", ""),
             ("  stack (deepest use)", ram["stack"], "", ""),
             ("  heap (newlib)", ram["heap"], "", ""),
             (f"  HAL, camera driver ({ESTIMATE})", ram["board_support"], "", ""),
             ("  total", ram["total"], ram["available"], _verdict(ram))]
    return rows


FLASH_TITLES = {"model": "model (C array)", "tflm": "TFLM runtime, reference kernels",
                "cmsis_nn": "CMSIS-NN kernels", "application": "application, camera, start-up",
                "c_library": "C library (newlib, libstdc++, libgcc)",
                "other": "alignment, linker padding"}


def fit_notes(fit: BoardFit) -> list[str]:
    """The lines under the table: instructions and latency, each labelled, and for a measured
    fit the previous estimates beside it."""
    firmware = fit.firmware
    lines = []
    if firmware:
        per_mac = f" ({firmware['per_mac']:g}/MAC)" if firmware.get("per_mac") else ""
        lines.append(f"instructions/inference ({MEASURED}, emulated {firmware['title']}): "
                     f"{firmware['instructions']:,}{per_mac}")
        lines.append(f"  camera preprocessing: {firmware['preprocess']:,} instructions; tensor "
                     f"arena used: {fit.ram['arena']:,} bytes")
    if fit.latency_basis == "instructions":
        lines.append(f"latency: {fit.latency_ms:g} ms = instructions x "
                     f"{fit.cycles_per_instruction:g} cycles/instr. (calibrated) / "
                     f"{fit.clock_mhz:g} MHz")
    else:
        lines.append(f"latency ({ESTIMATE}): {fit.latency_ms:g} ms = {fit.macs:,} MACs x "
                     f"{fit.cycles_per_mac:g} cycles/MAC / {fit.clock_mhz:g} MHz")
    estimate = fit.estimate
    if estimate:
        lines.append(f"previous estimates: flash {estimate.flash:,}, RAM {estimate.ram:,}, "
                     f"latency {estimate.latency_ms:g} ms ({estimate.cycles_per_mac:g} "
                     "cycles/MAC)")
    if firmware:
        same = "byte-identical" if firmware["byte_identical"] else "NOT byte-identical"
        lines.append(f"{same} on the emulated {firmware['title']} ({firmware['frames']} frames)")
    return lines


def fit_table(fit: BoardFit) -> str:
    """The fit as a plain-text table (console, CLI, export errors)."""
    rows = fit_rows(fit)
    width = max(len(r[0]) for r in rows)
    lines = [f"{fit.board} ({fit.core}, {fit.clock_mhz:g} MHz)",
             f"{'':<{width}}  {'bytes':>11}  {'board':>11}"]
    for label, used, available, verdict in rows:
        used_text = f"{used:,}" if used != "" else ""
        available_text = f"{available:,}" if available != "" else ""
        lines.append(f"{label:<{width}}  {used_text:>11}  {available_text:>11}  {verdict}".rstrip())
    lines.extend(fit_notes(fit))
    lines.append("fits" if fit.fits else "does NOT fit: " + "; ".join(fit.advice))
    return "\n".join(lines)


def _verdict(part: dict) -> str:
    """'21% ok' or '130% OVER' ('?' for a share that is no number: a damaged fit.json)."""
    total, available = part.get("total"), part.get("available")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v
                  for v in (total, available))
    share = f"{100 * total / available:.0f}%" if numbers else "?"
    return f"{share} {'ok' if part.get('fits') else 'OVER'}"
