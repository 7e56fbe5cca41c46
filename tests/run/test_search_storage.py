"""`tinyvision search --storage` keeps credentials out of everything it writes (trial configs,
the registry, the log, the report), a bad storage URL or study name is one line, not a
traceback."""

from __future__ import annotations

import pytest
import yaml
from helpers import make_class_folders, tiny_config
from typer.testing import CliRunner

from tinyvision.cli import app

pytest.importorskip("optuna")
SECRET = "s3cretPassw0rd"
runner = CliRunner()


@pytest.mark.parametrize("url, shown", [
    ("postgresql://tv:s3cret@db.example:5432/studies", "postgresql://tv:***@db.example:5432/studies"),
    ("mysql+pymysql://tv:p%40ss@db/s?charset=utf8", "mysql+pymysql://tv:***@db/s?charset=utf8"),
    ("sqlite:////tmp/s.db?password=x&mode=ro", "sqlite:////tmp/s.db?password=***&mode=ro"),
    ("postgresql://db/s?user=tv&token=abc", "postgresql://db/s?user=tv&token=***"),
    ("sqlite:////tmp/plain.db", "sqlite:////tmp/plain.db"),
])
def test_storage_urls_are_masked(url, shown):
    from tinyvision.run.search import masked_url

    assert masked_url(url) == shown


def _config(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=8)
    raw = tiny_config(root, tmp_path / "runs", name="colours",
                      model={"alpha": 0.25, "input_size": 32, "weights": "none"},
                      search={"input_sizes": [32], "alphas": [0.25], "dropouts": [0.0],
                              "epochs": 1, "trials": 1, "retrain": False})
    raw["train"] = {"batch_size": 8, "augment": [], "min_steps": 0}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    board = tmp_path / "big.yaml"
    board.write_text(yaml.safe_dump({"name": "big", "core": "x", "clock_mhz": 100,
                                     "flash_bytes": 1 << 30, "ram_bytes": 1 << 30,
                                     "cycles_per_mac": 1.0}))
    return config, board


@pytest.mark.slow
def test_the_storage_password_is_written_nowhere(tmp_path, caplog):
    config, board = _config(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}?password={SECRET}"  # sqlite ignores it
    result = runner.invoke(app, ["search", str(config), "--board", str(board), "--storage",
                                 storage, "--study", "colours"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and SECRET not in caplog.text
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written)  # the trial's run folder
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert "password=***" in (tmp_path / "runs" / "colours-t000" / "config.yaml").read_text()


@pytest.mark.parametrize("storage", ["nosuchdb://host/db", "not a url at all",
                                     "postgresql+nodriver://tv:pw@localhost/db"])
def test_a_bad_storage_url_is_one_line_without_the_password(tmp_path, storage):
    config, board = _config(tmp_path)
    result = runner.invoke(app, ["search", str(config), "--board", str(board), "--storage",
                                 storage])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "search storage" in result.output and "Traceback" not in result.output
    assert ":pw@" not in result.output


@pytest.mark.parametrize("study", ["../escape", "a/b", ""])
def test_a_study_name_is_a_name(tmp_path, study):
    config, board = _config(tmp_path)
    result = runner.invoke(app, ["search", str(config), "--board", str(board), "--study", study])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "study" in result.output and not list((tmp_path / "runs").rglob("*.sqlite3"))
