"""The recycle bin: a deleted knowledge base or document is moved here (data_dir/recycle/<id>/) with a
record of what it was, and can be put back for KEEP_DAYS; after that it is removed for good.

What may be restored by whom is decided by the caller (the registry knows owners and managers); this
module only keeps, lists, returns and expires the items."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

KEEP_DAYS = 7
RECORD = "item.json"
PAYLOAD = "payload"  # the base's folder, or the document file, inside the item's folder


@dataclass
class Item:
    id: str
    kind: str  # "base" | "document"
    name: str  # the base's name, or the document's path in its corpus
    kb_id: str
    kb_name: str
    by: str  # who deleted it ("" with login off)
    deleted: float
    extra: dict = field(default_factory=dict)  # a base's owner and grants

    def days_left(self, now: float) -> int:
        return max(0, math.ceil((self.deleted + KEEP_DAYS * 86400 - now) / 86400))

    @property
    def label(self) -> str:
        return f"知识库“{self.name}”" if self.kind == "base" else f"文档“{self.name}”（知识库“{self.kb_name}”）"


class RecycleError(Exception):
    """A restore refused, with the reason for the user (in Chinese)."""


class RecycleBin:
    def __init__(self, root: Path, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.clock = clock

    def put(self, kind: str, path: Path, name: str, kb_id: str, kb_name: str, by: str, extra: dict | None = None) -> Item:
        """Move `path` (a folder or a file) into the bin under a new item."""
        item = Item(uuid.uuid4().hex[:12], kind, name, kb_id, kb_name, by or "", self.clock(), extra or {})
        folder = self.root / item.id
        folder.mkdir(parents=True)
        (folder / RECORD).write_text(json.dumps(asdict(item), ensure_ascii=False), encoding="utf-8")
        shutil.move(str(path), str(folder / PAYLOAD))
        return item

    def items(self) -> list[Item]:
        """What the bin holds, newest first; items past KEEP_DAYS are removed first."""
        out, now = [], self.clock()
        if not self.root.is_dir():
            return out
        for folder in self.root.iterdir():
            try:
                item = Item(**json.loads((folder / RECORD).read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue  # a half-written item (a crash during put): not listed, never restored
            if item.days_left(now) <= 0:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            out.append(item)
        return sorted(out, key=lambda i: i.deleted, reverse=True)

    def get(self, item_id: str) -> Item:
        for item in self.items():
            if item.id == item_id:
                return item
        raise RecycleError("回收站中没有这一项（可能已超过 7 天被清除，或已恢复）")

    def take(self, item: Item, target: Path) -> None:
        """Move the item's payload to `target` (which must not exist) and forget the item."""
        if target.exists():
            raise RecycleError(f"无法恢复{item.label}：原位置已有同名{'知识库文件夹' if item.kind == 'base' else '文件'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.root / item.id / PAYLOAD), str(target))
        shutil.rmtree(self.root / item.id, ignore_errors=True)
