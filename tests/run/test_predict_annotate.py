"""`predict --annotate` never writes over a file: not an input image (two inputs may share a
name), not anything already in the output folder. Each copy gets a free name, and the CLI says
where each went."""

from __future__ import annotations

import pytest
from helpers import COLOURS, handbuilt_run, write_image
from PIL import Image
from typer.testing import CliRunner

from tinyvision.run.predict import Prediction, write_annotated


def _prediction(path) -> Prediction:
    return Prediction(str(path), ["red"], [("red", 0.9), ("green", 0.1)])


def test_an_input_and_an_existing_file_are_never_overwritten(tmp_path):
    first = write_image(tmp_path / "a" / "x.png", COLOURS["red"], seed=1)
    second = write_image(tmp_path / "b" / "x.png", COLOURS["green"], seed=2)
    before = {p: p.read_bytes() for p in (first, second)}
    # into the folder of one input, the other input first: neither input is written over
    written = write_annotated([_prediction(second), _prediction(first)], tmp_path / "a")
    assert {p: p.read_bytes() for p in (first, second)} == before
    assert [(source, target.name) for source, target in written] == [
        (str(second), "x-2.png"), (str(first), "x-3.png")]
    # a folder holding files of its own: they stay, the copies take free names
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(b"my own picture")
    (out / "x-2.png").write_bytes(b"another")
    written = write_annotated([_prediction(first), _prediction(second)], out)
    assert (out / "x.png").read_bytes() == b"my own picture"
    assert (out / "x-2.png").read_bytes() == b"another"
    assert [target.name for _, target in written] == ["x-3.png", "x-4.png"]
    for _, target in written:
        with Image.open(target) as im:
            assert im.size == (40, 30)
    assert not list(out.glob(".*"))  # no temporary file left


@pytest.mark.slow
def test_the_cli_says_where_each_annotated_copy_went(tmp_path):
    from tinyvision.cli import app

    _, run, _, _ = handbuilt_run(tmp_path)
    first = write_image(tmp_path / "photos" / "a" / "x.png", COLOURS["red"], seed=1)
    second = write_image(tmp_path / "photos" / "b" / "x.png", COLOURS["blue"], seed=2)
    out = tmp_path / "annotated"
    out.mkdir()
    (out / "x.png").write_bytes(b"keep me")
    result = CliRunner().invoke(app, ["predict", str(run.root), str(first), str(second),
                                      "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"{first} -> {out / 'x-2.png'}" in text and f"{second} -> {out / 'x-3.png'}" in text
    assert (out / "x.png").read_bytes() == b"keep me"
