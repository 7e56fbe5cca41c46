"""The firmware for the board's core: which cores QEMU runs, what is said without the Arm
toolchain, the map-file split of flash and RAM, the instruction counts the firmware prints, and a
fit from measured figures that says which figures are measured and which estimated. (The firmware
built and run on an emulated Cortex-M7 is in test_device.py, on the cached library.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyvision.deploy import firmware
from tinyvision.deploy.boards import load_board
from tinyvision.deploy.camera import CameraFormat
from tinyvision.deploy.firmware import (INSTALL, component_of, core_of, instruction_counts,
                                        map_sections, parse_counts, reference_kernel_ops)
from tinyvision.deploy.fit import BOARD_SUPPORT_FLASH_BYTES, fit_check, fit_table
from tinyvision.deploy.tflm_build import AppRun
from tinyvision.errors import VerifyError


def test_board_cores_map_to_build_targets_and_qemu_machines():
    assert core_of("Cortex-M7").machine == "mps2-an500"
    assert core_of("Cortex-M4F").target == "cortex-m4" and core_of("Cortex-M4F").cpu == "cortex-m4"
    m0 = core_of("Cortex-M0+")
    assert (m0.target, m0.machine, m0.cpu) == ("cortex-m0plus", "mps2-an385", "cortex-m3")
    assert core_of("Xtensa LX7") is None
    # every shipped board but the ESP32-S3 has a core QEMU runs
    for name, runs in (("stm32h743", True), ("nrf52840", True), ("rp2040", True),
                       ("esp32s3", False)):
        assert (core_of(load_board(name).core) is not None) == runs


def test_without_the_toolchain_the_reason_names_what_to_install(tmp_path, monkeypatch):
    tree = tmp_path / "tflm"
    (tree / "cortex_m" / "qemu").mkdir(parents=True)
    (tree / "cortex_m" / "qemu" / "mps2.ld").write_text("")
    monkeypatch.setattr(firmware.shutil, "which", lambda tool: None)
    reason = firmware.unavailable_reason("Cortex-M7", tree)
    assert "arm-none-eabi-g++" in reason and "qemu-system-arm" in reason and INSTALL in reason
    assert "QEMU cannot run a Xtensa LX7 core" in firmware.unavailable_reason("Xtensa LX7", tree)
    assert "no TFLM source tree" in firmware.unavailable_reason("Cortex-M7", None)
    assert "has no cortex_m/" in firmware.unavailable_reason("Cortex-M7", tmp_path)


MAP = """\
Discarded input sections

 .text          0x00000000        0x8 /b/main.o

Linker script and memory map

.text           0x00000000      0x100
 *(.vectors)
 .vectors       0x00000000       0x40 /b/vectors.o
 .text._ZN6tflite12_GLOBAL__N_14EvalEP13TfLiteContextP10TfLiteNode
                0x00000040       0x30 /c/libtflm.a(conv.o)
 .text.arm_convolve_s8
                0x00000070       0x20 /c/libtflm.a(arm_convolve_s8.o)
 .rodata.model_int8
                0x00000090       0x40 /b/model.o
                0x00000090                model_int8
 .rodata.str1.1
                0x000000d0       0x20 /c/libtflm.a(micro_interpreter.o)
 .rodata.str1.1
                0x000000d0       0x10 /c/libtflm.a(micro_allocator.o)
 *fill*         0x000000f0        0x4
 .text          0x000000f4        0xc /usr/lib/arm-none-eabi/lib/libc.a(lib_a-memcpy.o)
.ARM.exidx      0x00000100        0x8
 .ARM.exidx     0x00000100        0x8 /usr/lib/gcc/libgcc.a(_udivmoddi4.o)
.data           0x20000000       0x10
 .data          0x20000000       0x10 /usr/lib/arm-none-eabi/lib/libc.a(lib_a-impure.o)
.bss            0x20000010      0x120
 .bss._ZN12_GLOBAL__N_17g_frameE
                0x20000010       0x60 /b/main.o
 .bss._ZN12_GLOBAL__N_17g_arenaE
                0x20000070       0xc0 /b/main.o
.ARM.attributes
                0x00000000       0x2e
 .ARM.attributes
                0x00000000       0x2e /b/main.o
"""


def test_the_map_file_splits_flash_and_ram_by_component(tmp_path, monkeypatch):
    """Long names continue on the next line; merged strings count up to the next section; a
    non-loaded section (.ARM.attributes) counts nowhere; discarded sections are not read."""
    (tmp_path / "app.map").write_text(MAP)
    sizes = {(o, n, f): size for o, n, size, f in map_sections(tmp_path / "app.map")}
    assert sizes[".text", ".text._ZN6tflite12_GLOBAL__N_14EvalEP13TfLiteContextP10TfLiteNode",
                 "/c/libtflm.a(conv.o)"] == 0x30
    # strings merged at one address: counted once, up to the next section
    assert sizes[".text", ".rodata.str1.1", "/c/libtflm.a(micro_interpreter.o)"] == 0x20
    assert sizes[".text", ".rodata.str1.1", "/c/libtflm.a(micro_allocator.o)"] == 0
    assert (".text", ".text", "/b/main.o") not in sizes  # discarded, not linked
    monkeypatch.setattr(firmware, "section_totals", lambda elf: {
        ".text": 0x100, ".ARM.exidx": 8, ".data": 0x10, ".bss": 0x120, ".ARM.attributes": 0x2e})
    size = firmware.firmware_size(tmp_path / "app.elf")
    flash, ram = size["flash"], size["ram"]
    assert flash["total"] == 0x100 + 8 + 0x10 and ram["total"] == 0x10 + 0x120
    assert flash["model"] == 0x40 and flash["cmsis_nn"] == 0x20
    assert flash["tflm"] == 0x30 + 0x20 and flash["other"] == 4  # conv.o, strings; *fill*
    assert flash["application"] == 0x40 and flash["c_library"] == 0xc + 8 + 0x10
    assert sum(v for k, v in flash.items() if k != "total") == flash["total"]
    assert (size["arena"], size["frame_buffer"]) == (0xc0, 0x60)
    assert ram["application"] == 0x120 and ram["c_library"] == 0x10


def test_components_of_the_link():
    assert component_of("/x/model.o") == "model"
    assert component_of("/x/main.o") == component_of("/x/vectors.o") == "application"
    assert component_of("/c/libtflm.a(arm_nn_mat_mult_nt_t_s8.o)") == "cmsis_nn"
    assert component_of("/c/libtflm.a(micro_interpreter.o)") == "tflm"
    assert component_of("/usr/lib/libc.a(lib_a-printf.o)") == "c_library"
    assert component_of("") == "other"


PRINTED = """\
arena_used_bytes: 1000
op_names: MUL ADD CONV_2D MEAN RESHAPE SOFTMAX
ticks 0: preprocess 10 invoke 1000 ops 20 80 800 50 1 9
frame 0: a 0.500
ticks 1: preprocess 10 invoke 1002 ops 20 80 802 50 1 9
frame 1: b 0.600
stack_used_bytes: 1200
heap_used_bytes: 5000
"""


def test_the_counts_the_firmware_prints_become_instructions():
    ran = AppRun(np.zeros((2, 4), np.int8), np.zeros((2, 3), np.int8), 1000, PRINTED)
    run = parse_counts(ran, 2)
    assert run.op_names[2] == "CONV_2D" and list(run.invoke) == [40_000, 40_080]
    assert (run.stack_bytes, run.heap_bytes) == (1200, 5000)
    counts = instruction_counts(run)
    assert counts["per_inference"] == 40_040 and counts["preprocess"] == 400
    assert counts["by_op"]["CONV_2D"] == {"instructions": 32_040, "kernel": "cmsis-nn",
                                          "share": round(32_040 / 40_040, 4)}
    assert counts["by_op"]["MEAN"]["kernel"] == "reference"
    # MEAN computes on a reference kernel (CMSIS-NN has none); RESHAPE only moves bytes
    assert [o["op"] for o in reference_kernel_ops(counts)] == ["MEAN"]
    assert instruction_counts(run, kernels="reference")["by_op"]["CONV_2D"]["kernel"] == \
        "reference"
    with pytest.raises(VerifyError, match="did not print its instruction counts"):
        parse_counts(ran, 3)


def _firmware(outputs_equal=True) -> dict:
    return {"checked": True, "core": "cortex-m7", "title": "Cortex-M7",
            "emulated": "QEMU mps2-an500", "frames": 8, "outputs_equal": outputs_equal,
            "arena_used_bytes": 95_000, "stack_bytes": 1_300, "heap_bytes": 6_000,
            "size": {"flash": {"model": 300_000, "tflm": 60_000, "cmsis_nn": 30_000,
                               "application": 15_000, "c_library": 40_000, "other": 100,
                               "total": 445_100},
                     "ram": {"total": 260_000}, "arena": 96_000, "frame_buffer": 153_600},
            "instructions": {"per_inference": 29_000_000, "preprocess": 1_250_000}}


def test_a_fit_from_the_firmware_says_what_is_measured_and_keeps_the_estimate():
    camera = CameraFormat("rgb565", 320, 240, "big")
    board = load_board("stm32h743")
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"]
    estimate = fit_check(board, 300_000, ops, 96_000, "compiled application", 7_489_664, camera)
    fit = fit_check(board, 300_000, ops, 96_000, "compiled application", 7_489_664, camera,
                    firmware=_firmware())
    assert estimate.basis == "estimate" and fit.basis == "measured"
    assert fit.flash["total"] == 445_100 + BOARD_SUPPORT_FLASH_BYTES
    assert fit.ram["total"] == 260_000 + 1_300 + 6_000 + fit.ram["board_support"]
    assert (fit.estimate.flash, fit.estimate.ram, fit.estimate.latency_ms,
            fit.estimate.cycles_per_mac) == (estimate.flash["total"], estimate.ram["total"],
                                             estimate.latency_ms, 2.0)
    cpi = board.cycles_per_instruction
    assert fit.latency_basis == "instructions"
    assert fit.latency_ms == float(f"{29_000_000 * cpi / 480e3:.3g}")
    table = fit_table(fit)
    assert "flash (measured, linked Cortex-M7 firmware)" in table
    assert "HAL, camera driver (estimate)" in table and "RAM (measured on the emulated" in table
    assert max(len(line) for line in table.splitlines()) <= 80  # a terminal's width
    assert "instructions/inference (measured, emulated Cortex-M7): 29,000,000" in table
    assert "byte-identical on the emulated Cortex-M7 (8 frames)" in table
    assert "previous estimates: flash" in table and table.splitlines()[-1] == "fits"
    assert "NOT byte-identical" in fit_table(fit_check(
        board, 300_000, ops, 96_000, "x", 7_489_664, camera, firmware=_firmware(False)))
    # a board file without a calibrated cycles/instruction keeps the MAC estimate, labelled
    plain = board.model_copy(update={"cycles_per_instruction": None})
    fit = fit_check(plain, 300_000, ops, 96_000, "x", 7_489_664, camera, firmware=_firmware())
    assert fit.latency_basis == "macs" and "latency (estimate):" in fit_table(fit)


def test_calibrated_boards_name_the_published_figure():
    for name in ("stm32h743", "stm32h747", "nicla_vision", "stm32l4r5", "nrf52840"):
        board = load_board(name)
        assert board.cycles_per_instruction and "cycles_per_instruction" in board.sources
    assert load_board("rp2040").cycles_per_instruction is None  # no published figure: estimate
    assert load_board("esp32s3").cycles_per_instruction is None  # QEMU cannot run it


def test_the_application_prints_with_formats_newlib_has():
    from tinyvision.deploy.app import main_source, makefile

    quantization = {"input": {"shape": [1, 8, 8, 3], "scale": 1.0, "zero_point": -128},
                    "output": {"shape": [1, 2], "scale": 0.1, "zero_point": 0, "index": 0},
                    "outputs": [{"shape": [1, 2], "scale": 0.1, "zero_point": 0, "index": 0}]}
    source = main_source(quantization, "model_int8", "model_int8.h", 1000)
    assert "%zu" not in source and "%lu" in source and "TV_COUNT_INSTRUCTIONS" in source
    rules = makefile("model_int8.cc", "model_int8.h")
    assert "-Werror" in rules and "-DTV_COUNT_INSTRUCTIONS" in rules and "app.map" in rules


def test_fit_with_damaged_firmware_figures_in_verify_json_is_one_line(tmp_path, monkeypatch):
    """`tinyvision fit` reuses verify.json's firmware figures for the same core: damaged ones
    are a RunError naming the file and the command that rewrites it, not a traceback."""
    from tinyvision.errors import RunError
    from tinyvision.run import device

    run = type("R", (), {"verify": tmp_path / "verify.json", "root": tmp_path})()
    damaged = {"checked": True, "core": "cortex-m7", "size": {"flash": "<b>"}}
    (tmp_path / "verify.json").write_text(json.dumps(
        {"tflm_images": 1, "reference_images": 1, "tflm_equals_reference": True,
         "arena_bytes": 1000, "int8_bytes": 10, "ops": {}, "input_quantization": {},
         "firmware": damaged}))
    monkeypatch.setattr(run.__class__, "int8_model", tmp_path / "m.tflite", raising=False)
    monkeypatch.setattr(run.__class__, "require", lambda self, path, by: path, raising=False)
    (tmp_path / "m.tflite").write_bytes(b"x" * 10)
    monkeypatch.setattr(device, "model_ops", lambda path: [])
    cfg = type("C", (), {"deploy": type("D", (), {"camera": None})(),
                         "verify": type("V", (), {"tflm_source": None})()})()
    with pytest.raises(RunError, match="firmware figures in .*verify.json are damaged"):
        device.run_fit(cfg, run, "stm32h743")
