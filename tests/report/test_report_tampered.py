"""report.html of a tampered run: every value read from the run's JSON files, numbers included,
is escaped or rendered as digits, so a run folder from elsewhere cannot put markup or a script
into the page (stored XSS)."""

from __future__ import annotations

import json

import pytest
from helpers import handbuilt_run

PAYLOAD = "<script>alert(1)</script>"


def _tamper(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _numbers_to_payload(node):
    """Every number in a JSON tree replaced by the payload (alternately as text and in a list)."""
    if isinstance(node, dict):
        return {key: _numbers_to_payload(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_numbers_to_payload(value) for value in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return PAYLOAD if len(str(node)) % 2 else [PAYLOAD]
    return node


@pytest.mark.slow
def test_numbers_from_a_tampered_run_cannot_inject_markup(tmp_path):
    from tinyvision.run.stages import prepare_data, report_stage

    cfg, run, _, _ = handbuilt_run(tmp_path, export={"board": "stm32h743"},
                                   deploy={"camera": {"format": "rgb565", "width": 64,
                                                      "height": 48}})

    def verify(data):
        data.update(tflm_images=PAYLOAD, reference_images=[PAYLOAD])
        data["app"] = {"checked": True, "frames": PAYLOAD, "arena_used_bytes": PAYLOAD}
        data["fit"] = _numbers_to_payload(data["fit"])
        data["camera"] = _numbers_to_payload(data["camera"])

    def metrics(data):
        data["float"].update(images=PAYLOAD, accuracy=PAYLOAD, macro_f1=[PAYLOAD], beta=PAYLOAD,
                             split=[PAYLOAD])
        for entries in data.get("worst_predictions", {}).values():
            for entry in entries:
                entry["score"] = PAYLOAD

    _tamper(run.verify, verify)
    _tamper(run.metrics, metrics)
    summary = {"status": "export_failed", "error": PAYLOAD, "warnings": [{"message": [PAYLOAD]}],
               "macs": PAYLOAD, "int8_bytes": [PAYLOAD], "arena_bytes": PAYLOAD}
    run.summary.write_text(json.dumps(summary))
    page = report_stage(cfg, run, prepare_data(cfg, run, progress=False)).read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
