"""Does the int8 model fit the board? Flash (model + TFLM runtime for the ops used + application
margin) and RAM (tensor arena + camera frame buffer + stack/heap margin) against the board's, and
an estimated latency (MACs x cycles/MAC / clock).

The runtime and margin figures are estimates for a Cortex-M build with -Os and CMSIS-NN kernels:
they are labelled so in every table. The arena is measured: by the compiled application when
verify built it (`arena_used_bytes()`), else by the Python TFLM interpreter (which counts about
250 bytes of its own bookkeeping, so it errs on the safe side).
"""

from __future__ import annotations

from tinyvision.deploy.boards import Board
from tinyvision.deploy.camera import CameraFormat

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
# public int8 models of the same kind, printed beside a fit for scale
PUBLIC_REFERENCES = ("TFLM person_detect.tflite (MobileNet V1 0.25, 96x96x1): 300,568 bytes; "
                     "MLPerf Tiny visual wake words int8: 334.2 kB model, 156 KB runtime memory")


def fit_check(board: Board, model_bytes: int, ops: list[str], arena_bytes: int,
              arena_source: str, macs: int, camera: CameraFormat | None) -> dict:
    """The fit of one model on one board, as the dict `summary.json` and the report keep."""
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
    fit = {
        "board": board.name, "title": board.title, "core": board.core,
        "clock_mhz": board.clock_mhz,
        "flash": {"model": model_bytes, "runtime": runtime, "runtime_ops": unique,
                  "application": APPLICATION_FLASH_BYTES, "total": flash_total,
                  "available": board.flash_bytes, "fits": flash_fits},
        "ram": {"arena": arena_bytes, "arena_source": arena_source, "frame_buffer": frame,
                "camera": camera.describe() if camera is not None else None,
                "stack_heap": STACK_HEAP_BYTES, "total": ram_total, "available": board.ram_bytes,
                "largest_block": block, "fits": ram_fits},
        "macs": macs, "cycles_per_mac": board.cycles_per_mac,
        "latency_ms": float(f"{latency_ms:.3g}"),
        "latency_note": f"{ESTIMATE}: MACs x cycles/MAC / clock "
                        f"({board.sources.get('cycles_per_mac', 'board profile')})",
        "fits": flash_fits and ram_fits,
    }
    fit["advice"] = _advice(fit)
    return fit


def _advice(fit: dict) -> list[str]:
    advice = []
    flash, ram = fit["flash"], fit["ram"]
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
        if block is not None and max(ram["arena"], ram["frame_buffer"]) > block:
            advice.append(f"the largest RAM block holds {block:,} bytes: the arena "
                          f"({ram['arena']:,}) and the frame buffer ({ram['frame_buffer']:,}) "
                          "must each fit one")
        advice.append("the arena grows with the input area: a smaller model.input_size, "
                      "model.color_mode: grayscale (a third of the input), or a smaller "
                      "model.alpha; a smaller or grayscale camera frame shrinks the frame buffer")
    return advice


def fit_table(fit: dict) -> str:
    """The fit as a plain-text table (console, CLI, export errors)."""
    flash, ram = fit["flash"], fit["ram"]
    rows = [("flash", "", "", ""),
            ("  model (C array)", flash["model"], "", ""),
            (f"  TFLM runtime, {len(flash['runtime_ops'])} ops ({ESTIMATE})", flash["runtime"], "", ""),
            (f"  application ({ESTIMATE})", flash["application"], "", ""),
            ("  total", flash["total"], flash["available"], _verdict(flash)),
            ("RAM", "", "", ""),
            (f"  tensor arena ({ram['arena_source']})", ram["arena"], "", ""),
            (f"  camera frame buffer ({ram['camera'] or 'no camera'})", ram["frame_buffer"], "", ""),
            (f"  stack, heap, globals ({ESTIMATE})", ram["stack_heap"], "", ""),
            ("  total", ram["total"], ram["available"], _verdict(ram))]
    width = max(len(r[0]) for r in rows)
    lines = [f"{fit['board']} ({fit['core']}, {fit['clock_mhz']:g} MHz)",
             f"{'':<{width}}  {'bytes':>11}  {'board':>11}"]
    for label, used, available, verdict in rows:
        used_text = f"{used:,}" if used != "" else ""
        available_text = f"{available:,}" if available != "" else ""
        lines.append(f"{label:<{width}}  {used_text:>11}  {available_text:>11}  {verdict}".rstrip())
    lines.append(f"latency ({ESTIMATE}): {fit['latency_ms']:g} ms = {fit['macs']:,} MACs x "
                 f"{fit['cycles_per_mac']:g} cycles/MAC / {fit['clock_mhz']:g} MHz")
    lines.append("fits" if fit["fits"] else "does NOT fit: " + "; ".join(fit["advice"]))
    return "\n".join(lines)


def _verdict(part: dict) -> str:
    share = 100 * part["total"] / part["available"]
    return f"{share:.0f}% {'ok' if part['fits'] else 'OVER'}"
