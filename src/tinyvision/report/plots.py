"""Figures for the report as PNG bytes: training curves, confusion matrix, PR curves, thumbnails.

Charts use matplotlib's object API (`Figure` renders with Agg; pyplot's global state is never
touched), so plotting works headless and from threads. Thumbnails and annotated images use Pillow.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TRUE_COLOUR = (40, 180, 60)  # green: ground truth
PRED_COLOUR = (230, 40, 40)  # red: prediction
MAX_PR_CLASSES = 20  # more classes than this share one PR chart only as far as the legend allows


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, columns, squeeze=False)[0]


# ---- charts ----------------------------------------------------------------------------------
def training_curves(rows: Sequence[dict]) -> bytes | None:
    """Loss, each metric (train and val) and the learning rate per epoch, from log.csv rows.

    A dotted line marks where a new stage (head -> fine_tune) starts. None without numeric rows.
    """
    epochs = [_number(r.get("epoch")) for r in rows]
    if not rows or any(e is None for e in epochs):
        return None
    names = [k for k in rows[0] if k not in ("stage", "epoch", "seconds", "learning_rate")
             and not k.startswith("val_")]
    panels = names + (["learning_rate"] if "learning_rate" in rows[0] else [])
    if not panels:
        return None
    fig, axes = _figure(4.0 * len(panels), 3.0, len(panels))
    starts = [epochs[i] - 0.5 for i in range(1, len(rows)) if rows[i]["stage"] != rows[i - 1]["stage"]]
    for ax, name in zip(axes, panels):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            values = [_number(r.get(key)) for r in rows]
            points = [(e, v) for e, v in zip(epochs, values) if v is not None]
            if points and key in rows[0]:
                ax.plot(*zip(*points), style, markersize=3, label=key)
        for start in starts:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_title(name.replace("_", " "))
        if name == "learning_rate":
            ax.set_yscale("log")
        else:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return _png(fig)


def plain_text(text: str) -> str:
    """User text (a class name) shown as it is: matplotlib would read `$...$` as math (and fail
    on `$\\frac$`), so every `$` is escaped."""
    return str(text).replace("$", r"\$")


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def confusion_matrix_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Counts with rows = true class, columns = predicted class; cells shaded by row fraction."""
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    fraction = counts / np.where(rows == 0, 1, rows)
    side = min(2.0 + 0.45 * len(classes), 14.0)
    fig, (ax,) = _figure(side + 1.0, side)
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [plain_text(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(ticks, [plain_text(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize="small",
                    color="white" if fraction[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    return _png(fig)


def pr_curves(indicator: np.ndarray, scores: np.ndarray, classes: Sequence[str],
              thresholds: Sequence[float] | None = None) -> bytes | None:
    """Precision-recall curve per class (one-vs-rest), AP in the legend; with `thresholds`, the
    operating point of each class is marked. None if no class has both labels present."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, (ax,) = _figure(6.0, 4.5)
    drawn = 0
    for k, name in enumerate(classes[:MAX_PR_CLASSES]):
        column = indicator[:, k]
        if column.min() == column.max():
            continue
        precision, recall, cuts = precision_recall_curve(column, scores[:, k])
        ap = average_precision_score(column, scores[:, k])
        (line,) = ax.plot(recall, precision, drawstyle="steps-post",
                          label=f"{plain_text(name)} (AP {ap:.3f})")
        if thresholds is not None and len(cuts):
            at = min(int(np.searchsorted(cuts, thresholds[k], side="left")), len(cuts) - 1)
            ax.plot(recall[at], precision[at], "o", color=line.get_color())
        drawn += 1
    if not drawn:
        return None
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax.legend(fontsize="small", loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def iou_histogram(ious: dict[str, np.ndarray], baselines: dict[str, float]) -> bytes:
    """Distribution of per-image IoU for each model (e.g. {"float": ..., "int8": ...}), with the
    mean IoU of each model and of each constant answer (`baselines`, e.g. {"mean training box":
    0.53}) as vertical lines: the box must sit clearly right of the constants."""
    fig, (ax,) = _figure(6.5, 3.6)
    bins = np.linspace(0.0, 1.0, 21)
    colours = {}
    for name, values in ious.items():
        values = np.asarray(values, np.float64)
        _, _, patches = ax.hist(values, bins=bins, alpha=0.45, label=f"{name} (mean "
                                f"{values.mean():.3f})")
        colours[name] = patches[0].get_facecolor()
        ax.axvline(values.mean(), color=colours[name], linewidth=2)
    for (name, value), style in zip(baselines.items(), ("--", ":", "-.")):
        ax.axvline(value, color="black", linestyle=style, linewidth=1.2,
                   label=f"always the {name} (mean {value:.3f})")
    ax.axvline(0.5, color="grey", linewidth=0.8)
    ax.set(xlabel="IoU with the true box", ylabel="images", xlim=(0, 1))
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


# ---- images ----------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def annotate(image: Image.Image, lines: Sequence[str],
             boxes: Sequence[tuple[Sequence[float], tuple[int, int, int]]] = ()) -> Image.Image:
    """A copy of `image` (RGB) with pixel xyxy `boxes` outlined in their colours and `lines` of
    text on a dark band at the top left."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 100))
    for box, colour in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        # a predicted box may come out with x2 < x1 (nothing forces the order): draw its extent
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour,
                       width=width)
    if lines:
        font = _font(max(10, min(out.size) // 14))
        text = "\n".join(lines)
        left, top, right, bottom = draw.multiline_textbbox((3, 2), text, font=font)
        draw.rectangle([0, 0, right + 3, bottom + 3], fill=(0, 0, 0))
        draw.multiline_text((3, 2), text, fill=(255, 255, 255), font=font)
    return out


def thumbnail(pixels: np.ndarray, lines: Sequence[str] = (),
              boxes: Sequence[tuple[Sequence[float], tuple[int, int, int]]] = (),
              min_side: int = 128) -> Image.Image:
    """A model-input image (H, W, C uint8) enlarged to at least `min_side` pixels (nearest
    neighbour, so pixels stay honest), with normalised xyxy `boxes` and `lines` drawn."""
    array = np.asarray(pixels, dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    scale = max(1, -(-min_side // min(image.size)))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    pixel_boxes = [([box[0] * image.width, box[1] * image.height, box[2] * image.width,
                     box[3] * image.height], colour) for box, colour in boxes]
    return annotate(image, lines, pixel_boxes)


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def search_front(result) -> bytes:
    """A search's completed trials as their objective (validation accuracy, or a box's IoU
    score) vs flash bytes, the Pareto front
    joined and marked (`result`: run/search.py's SearchResult)."""
    fig, (ax,) = _figure(6.0, 4.0)
    rows = result.rows or []
    ax.scatter([r["flash"] / 1024 for r in rows], [r["objective"] for r in rows],
               color="#9aa5b1", label="trials")
    front = sorted(result.front, key=lambda r: r["flash"])
    ax.plot([r["flash"] / 1024 for r in front], [r["objective"] for r in front], "o-",
            color="#d9480f", label="Pareto front")
    ax.set_xlabel("flash (KiB, model + runtime + application)")
    ax.set_ylabel(getattr(result, "objective", "val accuracy"))
    ax.legend(loc="lower right")
    return _png(fig)
