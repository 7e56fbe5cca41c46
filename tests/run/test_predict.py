"""`tinyvision predict`: both model kinds, training's preprocessing, boxes, outputs and errors.

The slow tests share one real run directory whose model is built by hand (softmax of the mean
colour, so its answers depend on every pixel) and then goes through the real evaluate, export and
verify stages: no training, yet a model that tells red from green from blue.
"""

import json
import shutil

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from helpers import (DETECTION_BOX, colour_model, handbuilt_run, make_class_folders, tiny_config)
from tinyvision.config import validate_config
from tinyvision.data.cache import DecodeSpec, source_region, map_box
from tinyvision.errors import ConfigError, DataError, ModelError, RunError
from tinyvision.run.predict import (box_to_pixels, collect_images, decode_images, load_predictor,
                                to_csv)

@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    return handbuilt_run(tmp_path_factory.mktemp("predict"))


def _cache_view(data):
    indices = np.flatnonzero(data.cache.valid)
    paths = [data.manifest.samples[i].path for i in indices]
    return indices, paths, np.asarray(data.cache.images[indices])


# ---- both model kinds, training's preprocessing ----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_predict_equals_the_model_on_the_cache_images(colour_run, kind):
    from tinyvision.deploy.runners import ReferenceRunner

    _, run, data, model = colour_run
    indices, paths, images = _cache_view(data)
    predictor = load_predictor(run.root, kind)
    assert predictor.kind == kind
    predictions = predictor.predict(paths, top_k=3)
    if kind == "float":
        expected = model.predict(images.astype(np.float32), verbose=0)
    else:
        expected = ReferenceRunner(run.int8_model).scores(images)
    got = np.array([[dict(p.top)[c] for c in data.manifest.classes] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 if kind == "float" else 0)
    labels = [p.labels for p in predictions]
    assert labels == [[data.manifest.classes[k]] for k in expected.argmax(axis=1)]
    truth = [list(data.manifest.samples[i].labels) for i in indices]
    assert labels == truth  # the colour model is right, so preprocessing matched training's


@pytest.mark.slow
def test_model_path_inside_export_and_auto_kind(colour_run):
    _, run, _, _ = colour_run
    assert load_predictor(run.root).model_path == run.int8_model  # auto: the exported int8
    assert load_predictor(run.float_model).kind == "float"
    assert load_predictor(run.int8_model, "int8").kind == "int8"
    with pytest.raises(ConfigError, match="does not match"):
        load_predictor(run.int8_model, "float")
    with pytest.raises(ConfigError, match="Did you mean 'int8'"):
        load_predictor(run.root, "int9")


@pytest.mark.slow
def test_multiclass_run_has_no_thresholds(colour_run):
    _, run, _, _ = colour_run
    assert not (run.root / "thresholds.json").exists()
    assert "thresholds" not in run.c_header.read_text()
    assert load_predictor(run.root).thresholds is None


# ---- a detection run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    return handbuilt_run(tmp_path_factory.mktemp("detection"), detection=True)


def test_a_model_of_another_task_is_refused(colour_run):
    """A [class, box] model in a multi-class run (or the other way) is not the run's model."""
    _, run, data, _ = colour_run
    box_model = colour_model(data.manifest.classes, "multiclass", box=[0.1, 0.2, 0.6, 0.9])
    path = run.export_dir / "model_box.keras"
    box_model.save(path)
    try:
        with pytest.raises(ModelError, match=r"the run is multiclass with 3 class\(es\).*"
                                             r"expected outputs \[\[3\]\]: class"):
            load_predictor(path)
    finally:
        path.unlink()


@pytest.mark.slow
def test_box_model_gives_pixel_boxes_and_tta_flips_them_back(detection_run, tmp_path):
    import keras

    _, run, data, _ = detection_run
    box_model = colour_model(data.manifest.classes, "multiclass", box=[0.1, 0.2, 0.6, 0.9])
    path = run.export_dir / "model_box.keras"
    box_model.save(path)
    try:
        predictor = load_predictor(path)
        image = data.manifest.samples[0].path  # 40x30 pixels, stretched to 32x32
        (plain,) = predictor.predict([image])
        np.testing.assert_allclose(plain.box, [4.0, 6.0, 24.0, 27.0], atol=1e-3)
        assert plain.size == (40, 30)
        (flipped,) = predictor.predict([image], tta=True)  # mean of (0.1..0.6) and (0.4..0.9)
        np.testing.assert_allclose(flipped.box, [10.0, 6.0, 30.0, 27.0], atol=1e-3)
        csv_text = to_csv([plain], top_k=1)
        assert csv_text.splitlines()[0] == "path,labels,class_1,score_1,x1,y1,x2,y2"
    finally:
        path.unlink()
        keras.backend.clear_session()


@pytest.mark.slow
def test_int8_box_model_finds_its_outputs_and_maps_the_box(detection_run):
    from tinyvision.deploy.litert import export_int8

    _, run, data, _ = detection_run
    box_model = colour_model(data.manifest.classes, "multiclass", box=[0.1, 0.2, 0.6, 0.9])
    path = run.export_dir / "model_box_int8.tflite"
    export_int8(box_model, np.asarray(data.cache.images[data.indices("train")]), path)
    try:
        predictor = load_predictor(path)
        sample = next(s for s in data.manifest.samples if s.labels == ("red",))
        (prediction,) = predictor.predict([sample.path])
        assert prediction.labels == ["red"]
        np.testing.assert_allclose(prediction.box, [4.0, 6.0, 24.0, 27.0], atol=0.5)
    finally:
        path.unlink()


@pytest.mark.slow
def test_detection_run_has_box_metrics_float_and_int8(detection_run):
    from tinyvision.report.html import load_eval_scores

    _, run, data, _ = detection_run
    assert data.manifest.task == "detection"
    float_boxes = json.loads(run.metrics.read_text())["float"]["boxes"]
    int8_boxes = json.loads(run.verify.read_text())["metrics"]["boxes"]
    assert 0.2 < float_boxes["mean_iou"] < 1.0  # a constant box overlaps every true box somewhat
    assert int8_boxes["mean_iou"] == pytest.approx(float_boxes["mean_iou"], abs=0.02)
    saved = load_eval_scores(run)
    np.testing.assert_allclose(saved.boxes, np.tile(DETECTION_BOX, (len(saved.indices), 1)),
                               atol=1e-6)


@pytest.mark.slow
def test_detection_report_shows_boxes(detection_run):
    from tinyvision.run.stages import report_stage

    cfg, run, data, _ = detection_run
    page = report_stage(cfg, run, data).read_text()
    assert "<h2>Boxes (green: true, red: predicted)</h2>" in page and "mean IoU" in page
    assert "always the mean box: mean IoU" in page and "Lowest IoU, int8 model" in page


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_predict_on_a_detection_run_gives_pixel_boxes(detection_run, kind):
    _, run, data, _ = detection_run
    sample = next(s for s in data.manifest.samples if s.labels == ("blue",))
    (prediction,) = load_predictor(run.root, kind).predict([sample.path])
    assert prediction.labels == ["blue"] and prediction.size == (40, 30)
    np.testing.assert_allclose(prediction.box, [10.0, 7.5, 30.0, 22.5], atol=0.3)


# ---- the command ------------------------------------------------------------------------------
def _app():
    from tinyvision.cli.predict import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    return app


@pytest.mark.slow
def test_cli_json_out_and_annotated_copies(colour_run, tmp_path):
    _, run, data, _ = colour_run
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("red", "blue"):
        shutil.copy(root_image(data, name), folder / f"{name}.png")
    out, annotated = tmp_path / "p.json", tmp_path / "annotated"
    result = CliRunner().invoke(_app(), ["predict", str(run.root), str(folder), "--format", "json",
                                         "--out", str(out), "--annotate", str(annotated),
                                         "--top-k", "2", "--tta"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["kind"] == "int8" and report["tta"] is True
    assert [(p["path"].rsplit("/", 1)[1], p["labels"]) for p in report["predictions"]] == \
        [("blue.png", ["blue"]), ("red.png", ["red"])]
    assert all(len(p["scores"]) == 2 for p in report["predictions"])
    for name in ("blue.png", "red.png"):
        with Image.open(annotated / name) as im:
            assert im.size == (40, 30)


def root_image(data, name):
    return next(s.path for s in data.manifest.samples if s.labels == (name,))


@pytest.mark.slow
def test_cli_table_and_csv(colour_run):
    _, run, data, _ = colour_run
    image = root_image(data, "green")
    table = CliRunner().invoke(_app(), ["predict", str(run.root), image])
    assert table.exit_code == 0 and "green" in table.output
    result = CliRunner().invoke(_app(), ["predict", str(run.float_model), image, "-f", "csv"])
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    assert header.startswith("path,labels,class_1,score_1") and row.split(",")[1] == "green"


@pytest.mark.slow
def test_cli_bad_image_is_one_clear_error(colour_run, tmp_path):
    _, run, _, _ = colour_run
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = CliRunner().invoke(_app(), ["predict", str(run.root), str(broken)])
    assert result.exit_code == 1
    assert f"Cannot read image {broken}" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(_app(), ["predict", str(run.root), str(tmp_path / "nope.png")])
    assert missing.exit_code == 1 and "nope.png does not exist" in missing.output


# ---- fast checks ------------------------------------------------------------------------------
def test_missing_and_corrupt_images_name_the_file(tmp_path):
    spec = DecodeSpec((32, 32))
    with pytest.raises(DataError, match="missing.png does not exist"):
        collect_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        collect_images([tmp_path / "empty"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"PNG? no")
    with pytest.raises(DataError, match=r"Cannot read image .*bad\.png: cannot decode"):
        decode_images([bad], spec)


def test_folders_are_searched_recursively_in_sorted_order(tmp_path):
    make_class_folders(tmp_path / "imgs", per_class=2, classes=("red", "blue"))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    names = [p.relative_to(tmp_path / "imgs").as_posix() for p in collect_images([tmp_path / "imgs"])]
    assert names == ["blue/blue_0.png", "blue/blue_1.png", "red/red_0.png", "red/red_1.png"]


def test_model_outside_a_run_is_refused(tmp_path):
    lone = tmp_path / "model_int8.tflite"
    lone.write_bytes(b"x")
    with pytest.raises(RunError, match="not inside a run directory"):
        load_predictor(lone)
    with pytest.raises(RunError, match="does not exist"):
        load_predictor(tmp_path / "gone.keras")
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="neither a .tflite"):
        load_predictor(other)


@pytest.mark.parametrize("resize", ["stretch", "center_crop", "letterbox"])
@pytest.mark.parametrize("size", [(640, 480), (300, 500)])
def test_box_to_pixels_inverts_the_cache_mapping(resize, size):
    spec = DecodeSpec((96, 128), resize=resize)
    box = (100.0, 50.0, 260.0, 300.0)
    region = source_region(size, spec, None)
    normalised = map_box(box, region, spec)
    inside = [max(box[0], region[0]), max(box[1], region[1]), min(box[2], region[2]),
              min(box[3], region[3])]  # center_crop cuts off what lies outside the crop
    np.testing.assert_allclose(box_to_pixels(normalised, size, spec), inside, atol=1e-3)


def test_run_with_a_trusted_lambda_backbone_reloads_only_when_the_caller_trusts_it(tmp_path):
    """A backbone cut from a file with a Lambda layer (allowed in the config) is saved with its
    code: eval, export and predict reload the run's model only with the caller's
    `trust_model_code` (--trust-model-code), never because the run's config says so; through the
    CLI the refusal names the layer and the flag."""
    import keras

    from tinyvision.models.build import build_model
    from tinyvision.models.user_models import load_trained_model
    from tinyvision.files import atomic_path
    from tinyvision.run.stages import evaluate_stage, prepare_data
    from tinyvision.run.run import make_run_folder

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 0.5, name="halve")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="features")(x)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(tmp_path / "user.keras")
    root = make_class_folders(tmp_path / "images", per_class=6)
    raw = tiny_config(root, tmp_path / "runs", model={
        "weights": str(tmp_path / "user.keras"), "cut_at": "features",
        "allow_unsafe_model_code": True})
    cfg, run = make_run_folder(validate_config(raw))
    data = prepare_data(cfg, run, progress=False)
    model = build_model(cfg.model, len(data.manifest.classes), data.manifest.task)
    with atomic_path(run.float_model, suffix=".keras") as tmp_model:
        model.save(tmp_model)

    # the run's own config.yaml says allow_unsafe_model_code: true, yet its model does not load
    # without the caller's trust: a shared run folder never runs its code by itself
    for load in (lambda: load_trained_model(run.float_model),
                 lambda: evaluate_stage(cfg, run, data),
                 lambda: load_predictor(run.root, "float")):
        with pytest.raises(ModelError, match=r"Lambda layer\(s\) \['halve'\].*--trust-model-code"):
            load()
    metrics = evaluate_stage(cfg, run, data, trust_model_code=True)  # loads the file itself
    assert metrics["images"] > 0
    indices, paths, images = _cache_view(data)
    got = [[dict(p.top)[c] for c in data.manifest.classes]
           for p in load_predictor(run.root, "float", trust_model_code=True).predict(
               paths[:4], top_k=3)]
    np.testing.assert_allclose(got, model.predict(images[:4].astype(np.float32), verbose=0),
                               rtol=1e-5, atol=1e-6)
    from tinyvision.cli import app

    result = CliRunner().invoke(app, ["eval", str(run.root)])
    assert result.exit_code == 1 and "'halve'" in result.output
    assert "--trust-model-code" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["eval", str(run.root), "--trust-model-code"])
    assert result.exit_code == 0, result.output
