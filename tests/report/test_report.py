"""report.html of one tiny real run: self-contained, complete, and clean in headless Chromium.

The Chromium check fails on any console message (the report has no script of its own) and on any
<img> whose naturalWidth is 0. It is skipped only where no `chromium` binary is installed.
"""

import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is not "
                                    "installed (Debian package `chromium`)")
MACS = 123_456

# Appended to a copy of the page: after everything loaded, list the images that did not decode.
_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.src.slice(0, 60); });
  var out = document.createElement("pre");
  out.id = "tv-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""


def open_in_chromium(page: Path, tmp: Path) -> tuple[dict, list[str]]:
    """({images, broken}, console lines) of `page` loaded in headless Chromium."""
    checked = tmp / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={tmp / 'chromium-profile'}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
               checked.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="tv-check">(.*?)</pre>', done.stdout, re.S)
    assert match, f"Chromium did not render the page (exit {done.returncode}): {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(match.group(1))), console


def _png(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tinyvision.run.run import full_run, load_run
    from tinyvision.run.stages import prepare_data, report_stage

    tmp = tmp_path_factory.mktemp("report")
    root = make_class_folders(tmp / "images", per_class=15)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cfg = validate_config(tiny_config(root, tmp / "runs", evaluate={"worst_n": 3}))
    run, _ = full_run(cfg, console=None, progress=False)
    (run.root / "lr_find.png").write_bytes(_png())  # as `tinyvision lr-find` leaves it
    summary = json.loads(run.summary.read_text())
    run.summary.write_text(json.dumps({**summary, "macs": MACS}))
    cfg, run, manifest = load_run(run.root)
    data = prepare_data(cfg, run, manifest, progress=False)
    return cfg, run, data, report_stage(cfg, run, data)


# ---- the page --------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_is_self_contained(tiny_run):
    _, run, _, path = tiny_run
    assert path == run.root / "report.html"
    page = path.read_text()
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page), "a resource outside the page"
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", s)
                           for s in sources)
    assert not list(run.root.glob(".report.html.*")), "a temporary file was left behind"


@pytest.mark.slow
def test_report_has_every_section(tiny_run):
    _, run, data, path = tiny_run
    page = path.read_text()
    for heading in ("Configuration", "Data", "Samples (as the model sees them)", "Training",
                    "Learning-rate finder", "Evaluation", "Confusion matrix",
                    "Precision-recall curves", "Worst predictions",
                    "Float vs int8 on TensorFlow Lite Micro"):
        assert f">{heading}" in page, heading
    verify = json.loads(run.verify.read_text())
    for label, value in (("int8 model bytes", verify["int8_bytes"]),
                         ("tensor arena bytes", verify["arena_bytes"]), ("MACs per image", MACS)):
        assert re.search(rf"<td>{label}</td><td class=\"n\">{value:,}</td>", page), label
    counts = data.manifest.counts()
    for name in data.manifest.classes:
        cells = "".join(f'<td class="n">{counts[s][name]}</td>' for s in ("train", "val", "test"))
        assert f"<td>{name}</td>{cells}" in page
    assert "broken.jpg" in page  # the undecodable image is listed
    assert "mobilenet_v1 alpha 0.25" in page


@pytest.mark.slow
@needs_chromium
def test_report_opens_in_chromium_without_errors(tiny_run, tmp_path):
    _, _, _, path = tiny_run
    result, console = open_in_chromium(path, tmp_path)
    assert console == [], console
    assert result["broken"] == []
    assert result["images"] >= 10  # samples, curves, LR finder, confusion, PR, worst predictions


@needs_chromium
def test_chromium_check_catches_broken_images_and_console_errors(tmp_path):
    """The harness itself: a page with a bad image and a script error must fail it."""
    good = "data:image/png;base64," + __import__("base64").b64encode(_png()).decode()
    page = tmp_path / "bad.html"
    page.write_text(f'<!DOCTYPE html><html><body><img alt="good" src="{good}">'
                    '<img alt="bad" src="data:image/png;base64,AAAA"><img alt="gone" src="gone.png">'
                    '<script>console.error("boom");</script></body></html>')
    result, console = open_in_chromium(page, tmp_path)
    assert result == {"images": 3, "broken": ["bad", "gone"]}
    assert any("boom" in line for line in console)


@pytest.mark.slow
def test_report_without_later_stages_says_what_to_run(tiny_run, tmp_path):
    from tinyvision.run.run import load_run
    from tinyvision.run.stages import report_stage

    _, run, data, _ = tiny_run
    copy = Path(shutil.copytree(run.root, tmp_path / "partial"))
    for name in ("verify.json", "metrics.json", "eval_scores.npz", "log.csv", "lr_find.png"):
        (copy / name).unlink()
    cfg, partial, _ = load_run(copy)
    page = report_stage(cfg, partial, data).read_text()
    assert "run `tinyvision verify RUN`" in page and "run `tinyvision eval RUN`" in page
    assert "No log.csv" in page and "Learning-rate finder" not in page


# ---- commands --------------------------------------------------------------------------------
def _app():
    from tinyvision.cli import app

    return app


@pytest.mark.slow
def test_report_and_eval_tta_commands(tiny_run, tmp_path):
    _, run, _, _ = tiny_run
    copy = Path(shutil.copytree(run.root, tmp_path / "again"))
    (copy / "report.html").unlink()
    result = CliRunner().invoke(_app(), ["report", str(copy)])
    assert result.exit_code == 0, result.output
    assert (copy / "report.html").is_file()
    result = CliRunner().invoke(_app(), ["eval", str(copy), "--tta"])
    assert result.exit_code == 0, result.output
    assert "with flip TTA" in result.output
    assert json.loads((copy / "metrics.json").read_text())["float"]["tta"] is True


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_predict_on_the_trained_run_matches_its_cache(tiny_run, kind):
    """The real MobileNet run: predict from files == the model on the cached training pixels."""
    import keras

    from tinyvision.run.predict import load_predictor
    from tinyvision.deploy.runners import ReferenceRunner

    _, run, data, _ = tiny_run
    indices = np.flatnonzero(data.cache.valid)[::4]
    images = np.asarray(data.cache.images[indices])
    if kind == "float":
        expected = keras.models.load_model(run.float_model).predict(images.astype(np.float32),
                                                                    verbose=0)
    else:
        expected = ReferenceRunner(run.int8_model).scores(images)
    predictions = load_predictor(run.root, kind).predict(
        [data.manifest.samples[i].path for i in indices], top_k=3)
    got = np.array([[dict(p.top)[c] for c in data.manifest.classes] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [p.labels[0] for p in predictions] == \
        [data.manifest.classes[k] for k in expected.argmax(axis=1)]
