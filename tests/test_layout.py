"""The run folder's file names are spelled in one module (tinyvision/layout.py): a rename is one
line, and a reader finds the whole layout there."""

from __future__ import annotations

import ast
from pathlib import Path

import tinyvision
from tinyvision import layout
from tinyvision.run.folder import RunDir

SRC = Path(tinyvision.__file__).parent


def _names() -> set[str]:
    """Every file name layout.py declares that is specific enough to search for (it has a dot);
    the folders 'app', 'export' and 'checkpoints' are also ordinary words in the code (RunDir's
    property names, result keys)."""
    values = set()
    for key, value in vars(layout).items():
        if not key.isupper():
            continue
        for item in (value.values() if isinstance(value, dict) else
                     value if isinstance(value, tuple) else [value]):
            if "." in item:
                values.add(item)
    return values


def test_no_module_but_layout_spells_a_run_file_name():
    names, found = _names(), []
    assert {"config.yaml", "summary.json", "state.json", "model_int8.tflite"} <= names
    for path in SRC.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "run file names spelled outside tinyvision/layout.py:\n" + "\n".join(found)


def test_run_dir_paths_are_the_layout_names(tmp_path):
    run = RunDir(tmp_path)
    assert run.config == tmp_path / layout.CONFIG_FILE
    assert run.int8_model == tmp_path / layout.EXPORT_DIR / layout.FORMAT_FILES["int8"]
    assert run.app_dir == tmp_path / layout.EXPORT_DIR / layout.APP_DIR
    assert run.best_weights == tmp_path / layout.CHECKPOINTS_DIR / layout.BEST_WEIGHTS_FILE
    assert run.report == tmp_path / layout.REPORT_FILE


def test_the_stages_are_declared_in_order_with_what_they_read_and_write():
    """Each stage reads only what the config or an earlier stage wrote, names RunDir paths, and
    is a function of run/stages.py (a finished run is held to the writes in test_end_to_end)."""
    from tinyvision.run import stages

    written = {"config"}  # make_run_folder writes the config before any stage
    for stage in stages.STAGES:
        assert callable(getattr(stages, stage.function)), stage.name
        for name in stage.reads + stage.writes:
            assert isinstance(getattr(RunDir, name), property), (stage.name, name)
        assert set(stage.reads) <= written, (stage.name, set(stage.reads) - written)
        written |= set(stage.writes)
    assert [s.name for s in stages.STAGES] == ["data", "train", "evaluate", "export", "verify",
                                               "report"]
