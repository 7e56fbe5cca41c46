"""Class names are user data: quotes, newlines, `*/`, `$...$`, backslashes and HTML go through
the C header, the report's plots and the CLI tables as they are, never as code or markup."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

HOSTILE = ['say "hi"', "two\nlines", "*/ int evil;", "cost $x^2$", "bad $\\frac$", "<b>bold</b>",
           "back\\slash", "what??=", "[bold red]markup[/]", "ümlaut"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_the_c_source_holds_the_names_byte_for_byte(tmp_path):
    from tinyvision.deploy.c_source import write_c_source

    quantization = {"input": {"shape": [1, 8, 8, 3], "scale": 1.0, "zero_point": -128},
                    "output": {"shape": [1, len(HOSTILE)], "scale": 1 / 256, "zero_point": -128}}
    write_c_source(b"\x01\x02", tmp_path / "model.h", tmp_path / "model.c", "g_model",
                   quantization, HOSTILE)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "model.h"\nint main(void) {\n'
        '  for (int i = 0; i < G_MODEL_NUM_CLASSES; ++i) { fputs(g_model_classes[i], stdout);'
        ' fputc(0, stdout); }\n  return 0;\n}\n')
    build = subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "main"),
                            str(tmp_path / "main.c"), str(tmp_path / "model.c")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(tmp_path / "main")], capture_output=True).stdout
    assert out.split(b"\0")[:-1] == [name.encode() for name in HOSTILE]


def test_plots_show_the_names_as_text_not_math():
    """matplotlib reads $...$ as math and fails on `$\\frac$`: names are escaped."""
    from tinyvision.report.plots import confusion_matrix_plot, pr_curves, plain_text

    n = len(HOSTILE)
    png = confusion_matrix_plot(np.eye(n, dtype=int) * 3, HOSTILE)
    assert png[:4] == b"\x89PNG"
    truth = np.eye(n)[np.arange(2 * n) % n]
    scores = truth * 0.8 + 0.1
    assert pr_curves(truth, scores, HOSTILE)[:4] == b"\x89PNG"
    assert plain_text("cost $x^2$") == "cost \\$x^2\\$"


def test_cli_tables_print_names_literally():
    from rich.console import Console

    from tinyvision.evaluate.metrics import classification_metrics, format_metrics_table

    n = len(HOSTILE)
    truth = np.eye(n)[np.arange(2 * n) % n]
    metrics = classification_metrics(truth, truth * 0.9 + 0.01, HOSTILE, "multiclass")
    console = Console(record=True, width=300, file=open("/dev/null", "w"))
    console.print(format_metrics_table(metrics))
    text = console.export_text()
    assert "[bold red]markup[/]" in text and "<b>bold</b>" in text and "cost $x^2$" in text


def test_the_report_escapes_names_in_html():
    from tinyvision.report.html import _table

    html = _table(["class"], [["<script>alert(1)</script>"], ['say "hi"']])
    assert "<script>" not in html and "&lt;script&gt;" in html and "&quot;hi&quot;" in html
