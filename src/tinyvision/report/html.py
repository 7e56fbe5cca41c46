"""`report.html`: one self-contained page per run, readable offline.

Every image is embedded as a base64 data URI and the styles are inline; there is no script and no
external file, so the page can be mailed or archived. It is built from what the stages left in the
run directory (config.yaml, manifest, log.csv, lr_find.png, metrics.json, eval_scores.npz,
thresholds.json, verify.json, summary.json) plus the image cache; a missing file leaves its
section with a note on which command produces it.

About 600 lines on purpose: one function per section of the page, in page order, sharing the
escaping helpers (every value from a run folder goes through `_text`/`_num`, so a tampered run
cannot inject markup); the pictures come from report/plots.py.
"""

from __future__ import annotations

import base64
import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Protocol

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.cache import ImageCache
from tinyvision.data.manifest import SPLITS, Manifest
from tinyvision.deploy.fit import fit_rows
from tinyvision.report import plots
from tinyvision.files import atomic_path, atomic_write_text
from tinyvision.errors import RunError
from tinyvision.layout import (EVAL_SCORES_FILE, FIT_FILE, INT8_SCORES_FILE, LR_FIND_PLOT,
                               REPORT_FILE)
from tinyvision.records import BoardFit, Evaluation, Record, Summary, VerifyReport

class RunFolder(Protocol):
    """The files of a run the report reads (run/folder.py's RunDir has them)."""

    root: Path
    name: str
    config: Path
    log: Path
    metrics: Path
    verify: Path
    summary: Path
    int8_model: Path
    float_model: Path
    export_dir: Path


_SCORES_FILES = {"float": EVAL_SCORES_FILE, "int8": INT8_SCORES_FILE}
SAMPLES_PER_CLASS = 6
MAX_GRID_CLASSES = 30

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.25rem .6rem}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#777;font-style:italic}
.banner{background:#fdecea;border:1px solid #e0a8a2;border-left:6px solid #c62828;
padding:.6rem 1rem;margin:1rem 0;border-radius:4px}.banner p{margin:.3rem 0}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}
figure{margin:0;text-align:center;font-size:.8rem;max-width:260px}
img{max-width:100%}pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
.muted{color:#777}
"""


# ---- scores saved by the evaluate stage -------------------------------------------------------
@dataclass(frozen=True)
class EvalScores:
    """A model's outputs on the evaluated split, as the evaluate (float) or verify (int8) stage
    saved them."""

    split: str
    indices: np.ndarray  # sample indices into the manifest
    scores: np.ndarray | None  # (n, classes); None for a one-class box model
    boxes: np.ndarray | None  # (n, 4) normalised xyxy for box models


def save_eval_scores(run: RunFolder, split: str, indices: np.ndarray, scores: np.ndarray | None,
                     boxes: np.ndarray | None = None, kind: str = "float") -> Path:
    """Keep the evaluated split's sample indices, scores and boxes of the `kind` (float or
    int8) model for the report."""
    path = run.root / _SCORES_FILES[kind]
    arrays = {name: np.asarray(values, np.float32)
              for name, values in (("scores", scores), ("boxes", boxes)) if values is not None}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, split=np.array(split), indices=np.asarray(indices, np.int64), **arrays)
    return path


def load_eval_scores(run: RunFolder, kind: str = "float") -> EvalScores | None:
    """What `save_eval_scores` kept, or None if that stage has not run."""
    path = run.root / _SCORES_FILES[kind]
    if not path.exists():
        return None
    with np.load(path) as saved:
        arrays = {name: saved[name] if name in saved.files else None
                  for name in ("scores", "boxes")}
        return EvalScores(str(saved["split"]), saved["indices"], **arrays)


# ---- the page --------------------------------------------------------------------------------
def write_report(cfg: RunConfig, run: RunFolder, manifest: Manifest, cache: ImageCache) -> Path:
    """Build report.html for the run and write it atomically; returns its path."""
    path = run.root / REPORT_FILE
    atomic_write_text(path, build_report(cfg, run, manifest, cache))
    return path


def build_report(cfg: RunConfig, run: RunFolder, manifest: Manifest, cache: ImageCache) -> str:
    """The report as one HTML string."""
    files = _RunFiles.read(run)
    sections = [
        _banner(files.summary, files.unreadable),
        _config_section(cfg, run),
        _data_section(manifest, cache, cfg.seed),
        _training_section(run),
        _evaluation_section(manifest, files),
        _box_section(manifest, cache, files),
        _worst_section(manifest, cache, files),
        _deployment_section(run, files),
        _device_section(run, files),
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"tinyvision run {run.name}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class=\"muted\">{escape(manifest.task)}, "
            f"{len(manifest.classes)} classes, {len(manifest)} images &middot; report written "
            f"{stamp} &middot; {escape(str(run.root))}</p>{''.join(sections)}</body></html>\n")


class _RunFiles:
    """The JSON and score files of a run (None where absent; a damaged record is None too, and
    why is in `unreadable`, shown in the banner)."""

    def __init__(self, metrics, verify: VerifyReport | None, summary: Summary | None, scores,
                 int8_scores=None, fit: BoardFit | None = None,
                 unreadable: list[str] | None = None) -> None:
        self.metrics, self.verify, self.summary, self.scores = metrics, verify, summary, scores
        self.int8_scores, self.fit, self.unreadable = int8_scores, fit, unreadable or []

    @classmethod
    def read(cls, run: RunFolder) -> _RunFiles:
        unreadable: list[str] = []
        verify = _record(VerifyReport, run.verify, unreadable)
        fit = (verify.fit if verify is not None and verify.fit is not None
               else _record(BoardFit, run.export_dir / FIT_FILE, unreadable))
        return cls(_record(Evaluation, run.metrics, unreadable), verify,
                   _record(Summary, run.summary, unreadable),
                   load_eval_scores(run), load_eval_scores(run, "int8"), fit, unreadable)

    @property
    def float_metrics(self) -> dict | None:
        return self.metrics.float_metrics if self.metrics else None


def _record(kind: type[Record], path: Path, unreadable: list[str]):
    """The record in `path` (None when absent); a damaged one is None and its error is kept."""
    try:
        return kind.read(path)
    except RunError as exc:
        unreadable.append(str(exc))
        return None


# ---- html helpers ----------------------------------------------------------------------------
def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def _note(text: str) -> str:
    return f"<p class=\"note\">{escape(text)}</p>"


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img src=\"data:{mime};base64,{encoded}\" alt=\"{escape(alt)}\">"


def _figure(data: bytes, caption: str) -> str:
    return f"<figure>{_img(data, caption)}<figcaption>{escape(caption)}</figcaption></figure>"


def _table(headers: list[str], rows: list[list]) -> str:
    """A table; numbers (and the '–' of a missing value) are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value, spec: str = "") -> str:
    """A number read from the run's files, formatted with `spec`; anything else (a damaged or
    tampered file) as plain text. Escaped either way: a value never becomes markup."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return escape(format(value, spec))
        except ValueError:
            pass
    return _text(value)


def _text(value) -> str:
    return escape(str(value))


def _plain(value, spec: str) -> str:
    """A number formatted with `spec`, else the value as text (not escaped: for images)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except ValueError:
            pass
    return str(value)


def _td(value) -> str:
    numeric = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) \
        or (isinstance(value, str) and value[:1] in "+-" and value[1:2].isdigit())
    return f"<td class=\"n\">{escape(_cell(value))}</td>" if numeric else \
        f"<td>{escape(_cell(value))}</td>"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---- sections --------------------------------------------------------------------------------
def _banner(summary: Summary | None, unreadable: list[str] = ()) -> str:
    """What went wrong, at the top: the run's warnings, an export the checks refused, and run
    files that could not be read."""
    lines = [*unreadable, *(w["message"] for w in (summary.warnings if summary else []))]
    if summary is not None and summary.status == "export_failed":
        lines.insert(0, f"The int8 export was refused: {summary.error or ''}")
    if not lines:
        return ""
    return ("<div class=\"banner\" role=\"alert\">"
            + "".join(f"<p>{_text(line)}</p>" for line in lines) + "</div>")


def _config_section(cfg: RunConfig, run: RunFolder) -> str:
    m, t = cfg.model, cfg.train
    rows = [["backbone", f"{m.backbone} alpha {m.alpha:g}"],
            ["input", f"{m.input_size[0]}x{m.input_size[1]} {m.color_mode}, resize {cfg.data.resize}"],
            ["weights", m.weights], ["task", m.task],
            ["optimizer", f"{t.optimizer}, batch {t.batch_size}, label smoothing {t.label_smoothing:g}"],
            ["head stage", f"{t.head.epochs} epochs at lr {t.head.learning_rate:g}"],
            ["fine-tune stage", f"{t.fine_tune.epochs} epochs at lr {t.fine_tune.learning_rate:g} "
                                f"from {t.fine_tune.unfreeze_from}"],
            ["evaluation", f"beta {cfg.evaluate.beta:g}, TTA {'on' if cfg.evaluate.tta else 'off'}"],
            ["seed", str(cfg.seed)]]
    text = run.config.read_text() if run.config.exists() else cfg.to_yaml()
    return _section("Configuration", _table(["setting", "value"], rows)
                    + f"<details><summary>config.yaml</summary><pre>{escape(text)}</pre></details>")


def _data_section(manifest: Manifest, cache: ImageCache, seed: int) -> str:
    counts = manifest.counts()
    rows = [[name, *(counts.get(s, {}).get(name, 0) for s in SPLITS),
             sum(counts.get(s, {}).get(name, 0) for s in SPLITS)] for name in manifest.classes]
    body = _table(["class", *SPLITS, "total"], rows)
    body += f"<p>{len(manifest)} images; {len(cache.bad)} could not be decoded.</p>"
    if cache.bad:
        listed = "".join(f"<li>{escape(p)}: {escape(r)}</li>" for p, r in cache.bad[:50])
        body += f"<details><summary>undecodable images</summary><ul>{listed}</ul></details>"
    body += "<h3>Samples (as the model sees them)</h3>" + _sample_grid(manifest, cache, seed)
    return _section("Data", body)


def _sample_grid(manifest: Manifest, cache: ImageCache, seed: int) -> str:
    rng = np.random.default_rng(seed)
    figures = []
    for name in manifest.classes[:MAX_GRID_CLASSES]:
        members = [i for i, s in enumerate(manifest.samples) if name in s.labels and cache.valid[i]]
        for i in sorted(rng.permutation(members)[:SAMPLES_PER_CLASS].tolist()):
            sample = manifest.samples[i]
            image = plots.thumbnail(cache.images[i], boxes=_true_box(cache, i))
            figures.append(_figure(plots.encode_image(image),
                                   f"{', '.join(sample.labels)} · {Path(sample.path).name}"))
    return f"<div class=\"grid\">{''.join(figures)}</div>" if figures else _note("No images.")


def _true_box(cache: ImageCache, index: int) -> list:
    box = cache.boxes[index]
    return [] if np.isnan(box[0]) else [(box.tolist(), plots.TRUE_COLOUR)]


def _training_section(run: RunFolder) -> str:
    body = ""
    rows = _log_rows(run.log)
    chart = plots.training_curves(rows) if rows else None
    body += _img(chart, "training curves") if chart else _note("No log.csv: the model was not "
                                                              "trained in this run directory.")
    lr_find = run.root / LR_FIND_PLOT
    if lr_find.exists():
        body += "<h3>Learning-rate finder</h3>" + _img(lr_find.read_bytes(), "learning-rate finder")
    return _section("Training", body)


def _log_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _evaluation_section(manifest: Manifest, files: _RunFiles) -> str:
    metrics = files.float_metrics
    if metrics is None:
        return _section("Evaluation", _note("No metrics.json: run `tinyvision eval RUN`."))
    split = (f"Float model on the {_text(metrics.get('split', '?'))} split "
             f"({_num(metrics.get('images', metrics.get('n_samples')))} images"
             f"{', flip TTA' if metrics.get('tta') else ''})")
    if "per_class" not in metrics:  # a one-class box model: its box is its answer
        return _section("Evaluation", f"<p>{split}: one class, so the model answers a box only "
                        "(see Boxes).</p>")
    body = (f"<p>{split}: accuracy {_num(metrics['accuracy'], '.4f')}, macro F1 "
            f"{_num(metrics['macro_f1'], '.4f')}.</p>")
    body += _per_class_table(metrics)
    if metrics.get("confusion_matrix"):
        body += "<h3>Confusion matrix</h3>" + _img(
            plots.confusion_matrix_plot(metrics["confusion_matrix"], metrics["classes"]),
            "confusion matrix")
    if "label_confusion" in metrics:
        body += "<h3>Per-label confusion</h3>" + _label_confusion_table(metrics)
    body += "<h3>Precision-recall curves</h3>" + _pr_section(manifest, files, metrics)
    return _section("Evaluation", body)


def _per_class_table(metrics: dict) -> str:
    thresholds = metrics.get("thresholds")
    beta = metrics.get("beta", 1.0)
    scores = ("precision", "recall", "f1") + (("fbeta",) if beta != 1.0 else ())
    headers = ["class", "precision", "recall", "F1", f"F{_num(beta, 'g')}"][:len(scores) + 1]
    headers += ["support", "ROC-AUC", "PR-AUC"] + (["threshold"] if thresholds else [])
    rows = []
    for k, (name, row) in enumerate(metrics["per_class"].items()):
        rows.append([name, *(row[s] for s in scores), row["support"], row.get("roc_auc"),
                     row.get("pr_auc")] + ([thresholds[k]] if thresholds else []))
    for average in ("macro", "weighted"):
        row = metrics["averages"][average]
        rows.append([f"{average} avg", *(row[s] for s in scores), None,
                     metrics.get(f"roc_auc_{average}"), metrics.get(f"pr_auc_{average}")]
                    + ([None] if thresholds else []))
    caption = (f"<p>Thresholds tuned on the validation split to maximise F{_num(beta, 'g')}.</p>"
               if thresholds else "")
    return _table(headers, rows) + caption


def _label_confusion_table(metrics: dict) -> str:
    rows = [[name, tn, fp, fn, tp] for name, ((tn, fp), (fn, tp))
            in metrics["label_confusion"].items()]
    return _table(["class", "true neg.", "false pos.", "false neg.", "true pos."], rows)


_BOX_ROWS = (("mean IoU", "mean_iou"), ("accuracy at IoU >= 0.5 (class right too)",
                                       "accuracy_iou50"),
             ("IoU score (0 when the class is wrong)", "iou_score"),
             ("AP at IoU 0.50:0.95", "ap50_95"), ("AP at IoU 0.50", "ap50"),
             ("AP at IoU 0.75", "ap75"))


def _box_section(manifest: Manifest, cache: ImageCache, files: _RunFiles) -> str:
    """Box metrics of float and int8 beside the constant answers, the IoU distribution, and the
    boxes with the lowest IoU drawn on their images, for both models."""
    float_boxes = (files.float_metrics or {}).get("boxes")
    if float_boxes is None:
        return ""
    int8_boxes = ((files.verify and files.verify.metrics) or {}).get("boxes")
    rows = [[label, float_boxes.get(key), _get(int8_boxes, key)] for label, key in _BOX_ROWS]
    baselines = float_boxes.get("baselines", {})
    for name, base in baselines.items():
        label = name.replace("_", " ")
        rows.append([f"always the {label}: mean IoU", base["mean_iou"], None])
        rows.append([f"always the {label}: at IoU >= 0.5", base["accuracy_iou50"], None])
    body = _table(["box metric", "float (Keras)", "int8 on TFLM"], rows)
    ious = {kind: _ious(cache, scores) for kind, scores in (("float", files.scores),
                                                            ("int8", files.int8_scores))
            if scores is not None and scores.boxes is not None}
    if ious:
        body += _img(plots.iou_histogram(
            {kind: values for kind, (_, values) in ious.items()},
            {name.replace("_", " "): base["mean_iou"] for name, base in baselines.items()}),
            "IoU distribution")
    for kind, (indices, values) in ious.items():
        scores = files.scores if kind == "float" else files.int8_scores
        order = np.argsort(values, kind="stable")[:SAMPLES_PER_CLASS]
        figures = []
        for row in order.tolist():
            index = int(indices[row])
            boxes = _true_box(cache, index) + [(scores.boxes[row].tolist(), plots.PRED_COLOUR)]
            image = plots.thumbnail(cache.images[index], [f"IoU {values[row]:.3f}"], boxes,
                                    min_side=160)
            figures.append(_figure(plots.encode_image(image),
                                   Path(manifest.samples[index].path).name))
        body += (f"<h3>Lowest IoU, {kind} model</h3><div class=\"grid\">{''.join(figures)}</div>"
                 if figures else "")
    return _section("Boxes (green: true, red: predicted)", body)


def _ious(cache: ImageCache, scores: EvalScores) -> tuple[np.ndarray, np.ndarray]:
    """(sample indices, IoU of the saved box) for the evaluated images that have a true box."""
    from tinyvision.data.sources.boxes import box_iou

    truth = cache.boxes[scores.indices]
    has = np.isfinite(truth).all(axis=1)
    return scores.indices[has], box_iou(truth[has], scores.boxes[has])


def _pr_section(manifest: Manifest, files: _RunFiles, metrics: dict) -> str:
    if files.scores is None or files.scores.scores is None:
        return _note("No eval_scores.npz: run `tinyvision eval RUN` to draw the curves.")
    indicator = manifest.label_matrix()[files.scores.indices].astype(np.int64)
    chart = plots.pr_curves(indicator, files.scores.scores, manifest.classes,
                            metrics.get("thresholds"))
    return _img(chart, "precision-recall curves") if chart else _note(
        "No class has both positive and negative images in the evaluated split.")


def _worst_section(manifest: Manifest, cache: ImageCache, files: _RunFiles) -> str:
    worst = files.metrics.worst_predictions if files.metrics else None
    if worst is None:
        if (files.float_metrics or {}).get("boxes") is not None:
            return ""  # a one-class box model: its worst boxes are in the Boxes section
        return _section("Worst predictions", _note("None recorded: run `tinyvision eval RUN`."))
    index_of = {s.path: i for i, s in enumerate(manifest.samples)}
    predicted = {}  # sample index -> predicted box, for [class, box] models
    if files.scores is not None and files.scores.boxes is not None:
        predicted = dict(zip(files.scores.indices.tolist(), files.scores.boxes.tolist()))
    body = ""
    for name, entries in worst.items():
        figures = [_worst_figure(entry, cache, index_of.get(entry["path"]), predicted)
                   for entry in entries]
        body += f"<h3>{escape(name)}</h3>" + (f"<div class=\"grid\">{''.join(figures)}</div>"
                                              if figures else _note("No wrong predictions."))
    return _section("Worst predictions (most confident mistakes per class)", body)


def _worst_figure(entry: dict, cache: ImageCache, index: int | None, predicted: dict) -> str:
    true, pred = (", ".join(v) if isinstance(v, list) else v for v in (entry["true"], entry["pred"]))
    lines = [f"true: {true or '-'}", f"pred: {pred or '-'}", f"score {_plain(entry['score'], '.3f')}"]
    caption = f"{entry.get('error', '').replace('_', ' ')} {Path(entry['path']).name}".strip()
    if index is None or not cache.valid[index]:
        return f"<figure>{escape(' · '.join(lines))}<figcaption>{escape(caption)}</figcaption></figure>"
    boxes = _true_box(cache, index)
    if index in predicted:
        boxes.append((predicted[index], plots.PRED_COLOUR))
    image = plots.thumbnail(cache.images[index], lines, boxes, min_side=160)
    return _figure(plots.encode_image(image), caption)


def _deployment_section(run: RunFolder, files: _RunFiles) -> str:
    float_m, verify, summary = files.float_metrics, files.verify, files.summary
    int8_m = verify.metrics if verify else None
    body = ""
    if float_m or int8_m:
        keys = [("accuracy", "accuracy"), ("macro F1", "macro_f1"),
                ("ROC-AUC (macro)", "roc_auc_macro"), ("PR-AUC (macro)", "pr_auc_macro")]
        rows = [[label, _get(float_m, key), _get(int8_m, key), _delta(float_m, int8_m, key)]
                for label, key in keys if key in (float_m or int8_m or {})]
        rows += [[f"box {label}", _get(_boxes(float_m), key), _get(_boxes(int8_m), key),
                  _delta(_boxes(float_m), _boxes(int8_m), key)]
                 for label, key in _BOX_ROWS[:3] if _boxes(float_m or int8_m)]
        body += _table(["metric", "float (Keras)", "int8 on TFLM", "delta"], rows)
    if verify:
        body += (f"<p>TFLM ran {_num(verify.tflm_images)} images with outputs equal to the "
                 f"LiteRT reference kernels, which scored all {_num(verify.reference_images)}."
                 "</p>")
    else:
        body += _note("No verify.json: run `tinyvision verify RUN` for int8 metrics on TFLM.")
    body += _table(["", "value"], _size_rows(run, verify, summary))
    qat = verify.qat if verify else None
    if qat:
        body += "<h3>Quantisation-aware fine-tuning</h3>" + _table(
            ["metric", "float", "post-training int8", "QAT int8"],
            [[key, qat["float"].get(key), qat["ptq_int8"].get(key), qat["qat_int8"].get(key)]
             for key in _HEADLINE_KEYS if key in qat["ptq_int8"]])
    formats = verify.formats if verify else None
    if formats:
        body += "<h3>Other formats</h3>" + _table(
            ["format", "file", "bytes", _task_metric_label(formats), "max |diff| to Keras",
             "note"],
            [[fmt, e["file"], e["bytes"], _task_metric(e.get("metrics")),
              e.get("max_abs_diff"), e.get("note", "verified" if e.get("verified") else "")]
             for fmt, e in formats.items()])
    return _section("Float vs int8 on TensorFlow Lite Micro", body)


def _device_section(run: RunFolder, files: _RunFiles) -> str:
    """The compiled application's check, the camera path, and the fit on export.board."""
    verify, fit = files.verify, files.fit
    app, camera = (verify.app, verify.camera) if verify else (None, None)
    if not (fit or app or camera):
        return ""
    body = ""
    if app and app.get("checked"):
        body += (f"<p>The generated TFLM application (export/app), compiled on the host, gave "
                 f"input tensors and output bytes equal to the Python path's on "
                 f"{_num(app['frames'])} camera frames; it uses a "
                 f"{_num(app['arena_used_bytes'], ',')}-byte arena.</p>")
    elif app:
        body += _note(f"The compiled application was not checked: {app['reason']}")
    if camera:
        body += _table(["test split, int8", "training path", f"camera path ({camera['camera']})",
                        "delta"],
                       [[key, camera["training_path"].get(key), camera["metrics"].get(key),
                         _delta(camera["training_path"], camera["metrics"], key)]
                        for key in _HEADLINE_KEYS if key in camera["metrics"]])
    firmware = verify.firmware if verify else None
    if isinstance(firmware, dict) and firmware.get("reason"):
        body += _note(f"The firmware was not built for the board's core, so its flash, RAM and "
                      f"latency are estimates: {firmware['reason']}")
    if fit:
        body += _fit_table(fit)
    return _section("On the device", body)


def _fit_table(fit: BoardFit) -> str:
    """The fit's table (deploy.fit's rows, each labelled measured or estimate) and the
    instructions, latency and previous estimates under it."""
    rows = [[label.strip(), None if used == "" else used, None if available == "" else available,
             verdict] for label, used, available, verdict in fit_rows(fit)]
    verdict = "fits" if fit.fits else "does NOT fit: " + "; ".join(map(str, fit.advice))
    firmware, estimate = fit.firmware, fit.estimate
    notes = ""
    if firmware:
        notes += (f"<p>Instructions per inference (measured on the emulated "
                  f"{_text(firmware['title'])}, {_text(firmware['emulated'])}, -icount): "
                  f"{_num(firmware['instructions'], ',')} ({_num(firmware['per_mac'], 'g')} per "
                  f"MAC); camera preprocessing {_num(firmware['preprocess'], ',')}. Output "
                  f"bytes {'equal' if firmware['byte_identical'] is True else 'NOT equal'} to the "
                  f"Python TFLM interpreter's on {_num(firmware['frames'])} frames.</p>")
    if fit.latency_basis == "instructions":
        notes += (f"<p>Latency: {_num(fit.latency_ms, 'g')} ms = instructions x "
                  f"{_num(fit.cycles_per_instruction, 'g')} cycles/instruction (calibrated, "
                  f"board profile) / {_num(fit.clock_mhz, 'g')} MHz.</p>")
    else:
        notes += (f"<p>Latency (estimate): {_num(fit.latency_ms, 'g')} ms = "
                  f"{_num(fit.macs, ',')} MACs x {_num(fit.cycles_per_mac, 'g')} "
                  f"cycles/MAC / {_num(fit.clock_mhz, 'g')} MHz.</p>")
    if estimate:
        notes += (f"<p>Previous estimates: flash {_num(estimate.flash, ',')}, RAM "
                  f"{_num(estimate.ram, ',')} bytes, latency "
                  f"{_num(estimate.latency_ms, 'g')} ms.</p>")
    return (f"<h3>{_text(fit.board)} ({_text(fit.core)}, {_num(fit.clock_mhz, 'g')} "
            f"MHz): {_text(verdict)}</h3>" + _table(["", "bytes", "board", "use"], rows) + notes)


def _size_rows(run: RunFolder, verify: VerifyReport | None, summary: Summary | None
               ) -> list[list]:
    int8_bytes = (verify and verify.int8_bytes) or (summary and summary.int8_bytes)
    if not int8_bytes and run.int8_model.exists():
        int8_bytes = run.int8_model.stat().st_size
    float_bytes = run.float_model.stat().st_size if run.float_model.exists() else \
        summary and summary.float_bytes
    arena = (verify and verify.arena_bytes) or (summary and summary.arena_bytes)
    macs = summary.macs if summary else None
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(((verify and verify.ops) or {}).items()))
    return [["int8 model bytes", int8_bytes], ["float model bytes", float_bytes],
            ["tensor arena bytes", arena], ["MACs per image", macs], ["int8 ops", ops or None]]


_HEADLINE_KEYS = ("accuracy", "macro_f1", "mean_iou", "accuracy_iou50", "iou_score")


def _boxes(metrics: dict | None) -> dict | None:
    return None if metrics is None else metrics.get("boxes")


def _task_metric(metrics: dict | None):
    """A headline dict's accuracy, or a box model's mean IoU."""
    metrics = metrics or {}
    return metrics.get("accuracy", metrics.get("mean_iou"))


def _task_metric_label(formats: dict) -> str:
    has_accuracy = any("accuracy" in (e.get("metrics") or {}) for e in formats.values())
    return "accuracy" if has_accuracy else "box mean IoU"


def _get(metrics: dict | None, key: str):
    return None if metrics is None else metrics.get(key)


def _delta(a: dict | None, b: dict | None, key: str) -> str | None:
    x, y = _get(a, key), _get(b, key)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
    return f"{y - x:+.4f}" if numbers else None
