"""The offline answer's refusal threshold, chosen in the product's own documents (`train/refusal.py`):
`refusal.json` holds it, the rule, the whole curve, and the checksum of the reading model it was chosen
for. Another reading model (retrained, or a configured one) falls back to that model's own threshold."""

from __future__ import annotations

import json
import logging
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("refusal.json")
log = logging.getLogger("kexie.answer")


def calibrated(reader_sha256: str, path: Path = DEFAULT_PATH) -> float | None:
    """The chosen threshold when it was chosen for this reading model, else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("reader_sha256") != reader_sha256:
        log.warning("拒答阈值 %s 是为另一个阅读模型选定的，改用阅读模型自带的阈值（重新选定：python -m train.refusal）", path)
        return None
    return float(record["threshold"])
