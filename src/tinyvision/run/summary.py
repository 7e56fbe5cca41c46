"""The headline figures of a run, as summary.json, the registry and the console show them."""

from __future__ import annotations

HEADLINE_KEYS = ("accuracy", "macro_f1")
HEADLINE_BOX_KEYS = ("mean_iou", "accuracy_iou50", "iou_score")


def headline(metrics: dict) -> dict:
    """accuracy and macro F1 of a class output, mean IoU, accuracy at IoU >= 0.5 and the IoU
    score of a box; a headline dict is returned as it is."""
    out = {key: metrics[key] for key in HEADLINE_KEYS + HEADLINE_BOX_KEYS if key in metrics}
    boxes = metrics.get("boxes") or {}
    out.update({key: boxes[key] for key in HEADLINE_BOX_KEYS if key in boxes})
    return out


def metric_delta(before: dict, after: dict) -> dict:
    """after - before for each headline metric both have (int8 - float, camera - training)."""
    a, b = headline(before), headline(after)
    return {key: b[key] - a[key] for key in a if key in b}
