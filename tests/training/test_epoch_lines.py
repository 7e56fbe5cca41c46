"""One line per epoch, however many metrics, when the output is not a terminal (a log file, a
pipe): rich would otherwise wrap each epoch's summary at 80 columns."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console


def test_an_epoch_line_is_one_line_in_a_log_file():
    from tinyvision.training.callbacks import RichProgress

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    plan = SimpleNamespace(stage="fine_tune", sized=True, seconds=None, epochs=12,
                           steps_per_epoch=4)
    progress = RichProgress(console, plan)
    logs = {name: 0.123456 for name in ("loss", "accuracy", "val_loss", "val_accuracy", "val_iou",
                                        "box_loss", "val_box_loss", "learning_rate")}
    progress.on_train_begin()
    for epoch in range(2):
        progress.on_epoch_begin(epoch)
        progress.on_train_batch_end(0, logs)
        progress.on_epoch_end(epoch, logs)
    progress.on_train_end()
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2 and all(len(line) > 80 for line in lines), lines
    assert lines[1].startswith("fine_tune epoch 2/12") and "val_box_loss=0.1235" in lines[1]
