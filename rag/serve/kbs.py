"""Knowledge bases of the web app and the API: each its own corpus, index and FAQ folder, with grants.

The default base is the configured corpus/index (as the CLI uses it); bases created in the app live
under data_dir/kbs/<id>/. With login off everyone sees every base; with login on a user sees the bases
granted in the settings (`grants`, "*" = all), those granted in the database, and those they created;
`auth_user` sees all."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rag.serve.db import Database
from rag.serve.recycle import Item, RecycleBin, RecycleError
from rag.settings import Settings

DEFAULT_ID = "default"
DEFAULT_NAME = "默认知识库"
ID_SHAPE = re.compile(r"[0-9a-f]{12}|default")  # what uuid4().hex[:12] makes, and the default base's id


class KBError(Exception):
    """A knowledge-base operation refused, with the reason for the user (in Chinese)."""


@dataclass(frozen=True)
class KB:
    id: str
    name: str
    corpus_dir: Path
    index_dir: Path
    faq_dir: Path
    owner: str = ""


class Registry:
    """The knowledge bases, who may use them, and one Assistant per base (loaded on first use)."""

    def __init__(self, settings: Settings, db: Database | None = None, assistant=None):
        self.settings = settings
        self.db = db or Database(settings.data_root)
        self._assistants: dict = {}
        self._keepers: dict = {}  # base id -> its IndexKeeper (rag/search/keeper.py)
        if assistant is not None:
            self._assistants[DEFAULT_ID] = assistant
        self._lock = threading.Lock()
        self.recycle = RecycleBin(settings.data_root / "recycle")
        with self.db.connect() as c:
            c.execute("INSERT OR IGNORE INTO kbs (id, name, owner, created) VALUES (?, ?, '', ?)",
                      (DEFAULT_ID, DEFAULT_NAME, time.time()))

    # -- reading ---------------------------------------------------------------------------
    def _kb(self, row) -> KB:
        if row["id"] == DEFAULT_ID:
            s = self.settings
            return KB(DEFAULT_ID, row["name"], s.corpus_dir, s.index_dir, s.faq_root, "")
        root = self.settings.data_root / "kbs" / row["id"]
        return KB(row["id"], row["name"], root / "corpus", root / "index", root / "faq", row["owner"])

    def all(self) -> list[KB]:
        with self.db.connect() as c:
            rows = c.execute("SELECT * FROM kbs ORDER BY id != ?, created", (DEFAULT_ID,)).fetchall()
        return [self._kb(r) for r in rows]

    def allowed(self, user: str | None, kb: KB) -> bool:
        s = self.settings
        if not user or not s.logins():  # login off: one trusted office
            return True
        if user == s.auth_user or kb.owner == user:
            return True
        granted = s.grants.get(user, [])
        granted = [granted] if isinstance(granted, str) else list(granted)  # alice = "财务库" in TOML: one name
        # "id:…" and "name:…" say which they mean; a bare entry may be either (names never equal an id).
        if "*" in granted or f"id:{kb.id}" in granted or f"name:{kb.name}" in granted or kb.name in granted or kb.id in granted:
            return True
        with self.db.connect() as c:
            return c.execute("SELECT 1 FROM grants WHERE user = ? AND kb_id = ?", (user, kb.id)).fetchone() is not None

    def can_manage(self, user: str | None, kb: KB) -> bool:
        """Who may change a base (files, index, FAQ, name): login off, the admin, or its creator.
        A grant alone lets a user read and ask, not change."""
        s = self.settings
        return not user or not s.logins() or user == s.auth_user or (bool(kb.owner) and kb.owner == user)

    def managed(self, key: str | None, user: str | None) -> KB:
        kb = self.get(key, user)
        if not self.can_manage(user, kb):
            raise KBError(f"只能查看、不能修改知识库“{kb.name}”（由创建者或管理员管理）")
        return kb

    def visible(self, user: str | None) -> list[KB]:
        return [kb for kb in self.all() if self.allowed(user, kb)]

    def get(self, key: str | None, user: str | None = None) -> KB:
        """A base by id or name (None: the first visible one); KBError if unknown or not granted.

        Unknown and not granted read the same, so names of other users' bases do not leak."""
        bases = self.visible(user)
        if not bases:
            raise KBError("没有可用的知识库")
        if not key:
            return bases[0]
        # An id first: a name is only a label (and can never equal an id, see _valid_name).
        for kb in bases:
            if key == kb.id:
                return kb
        for kb in bases:
            if key == kb.name:
                return kb
        raise KBError(f"知识库不存在或无权访问：{key}")

    def settings_for(self, kb: KB) -> Settings:
        return self.settings.replace(corpus_dir=kb.corpus_dir, index_dir=kb.index_dir, faq_dir=str(kb.faq_dir))

    def assistant(self, kb: KB):
        """The base's Assistant, created once; the embedding model is shared by all bases."""
        from rag.answer.assistant import Assistant
        from rag.search.retrieval import Retriever

        with self._lock:
            a = self._assistants.get(kb.id)
            if a is None:
                embedder = self._shared_embedder()
                with self.db.connect() as c:  # deleted meanwhile: never re-create its folders
                    if c.execute("SELECT 1 FROM kbs WHERE id = ?", (kb.id,)).fetchone() is None:
                        raise KBError(f"知识库已删除：{kb.name}")
                s = self.settings_for(kb)
                a = Assistant(s, Retriever(s, embedder))
                self._assistants[kb.id] = a
            return a

    def keeper(self, kb: KB):
        """The one object that re-indexes this base and fills its vectors (created with its Assistant)."""
        from rag.search.keeper import IndexKeeper

        a = self.assistant(kb)
        with self._lock:
            k = self._keepers.get(kb.id)
            if k is None or k.retriever is not a.retriever:
                k = self._keepers[kb.id] = IndexKeeper(a.retriever)
            return k

    # -- changing --------------------------------------------------------------------------
    def create(self, name: str, user: str | None = None) -> KB:
        name = self._valid_name(name)
        kb_id = uuid.uuid4().hex[:12]
        with self.db.connect() as c:
            if c.execute("SELECT 1 FROM kbs WHERE name = ?", (name,)).fetchone():
                raise KBError(f"已有同名知识库：{name}")
            limit = self.settings.max_bases_per_user
            if user and user != self.settings.auth_user and limit > 0 and \
                    c.execute("SELECT COUNT(*) FROM kbs WHERE owner = ?", (user,)).fetchone()[0] >= limit:
                raise KBError(f"每位用户最多创建 {limit} 个知识库，请先删除不用的知识库或联系管理员")
            c.execute("INSERT INTO kbs (id, name, owner, created) VALUES (?, ?, ?, ?)", (kb_id, name, user or "", time.time()))
        kb = self.get(kb_id, user)
        kb.corpus_dir.mkdir(parents=True, exist_ok=True)
        kb.faq_dir.mkdir(parents=True, exist_ok=True)
        # An empty index, so the base answers "not found" at once instead of failing.
        self.keeper(kb).reindex(fill=False)
        return kb

    def rename(self, key: str, new_name: str, user: str | None = None) -> KB:
        kb = self.managed(key, user)
        new_name = self._valid_name(new_name)
        with self.db.connect() as c:
            other = c.execute("SELECT id FROM kbs WHERE name = ?", (new_name,)).fetchone()
            if other and other["id"] != kb.id:
                raise KBError(f"已有同名知识库：{new_name}")
            c.execute("UPDATE kbs SET name = ? WHERE id = ?", (new_name, kb.id))
        return self.get(kb.id, user)

    def delete(self, key: str, user: str | None = None) -> Item:
        """The base leaves the list at once; its folder goes to the recycle bin for KEEP_DAYS."""
        kb = self.managed(key, user)
        if kb.id == DEFAULT_ID:
            raise KBError("默认知识库不能删除")
        with self.db.connect() as c:  # first: no new question reaches the base
            grants = [r["user"] for r in c.execute("SELECT user FROM grants WHERE kb_id = ?", (kb.id,))]
            c.execute("DELETE FROM grants WHERE kb_id = ?", (kb.id,))
            c.execute("DELETE FROM kbs WHERE id = ?", (kb.id,))
        with self._lock:
            a = self._assistants.pop(kb.id, None)
            self._keepers.pop(kb.id, None)
        if a is not None:
            a.close()
        folder = self.settings.data_root / "kbs" / kb.id
        folder.mkdir(parents=True, exist_ok=True)
        return self.recycle.put("base", folder, kb.name, kb.id, kb.name, user or "", {"owner": kb.owner, "grants": grants})

    def delete_document(self, key: str, source: str, user: str | None = None) -> Item:
        """A document of a base to the recycle bin (the caller re-indexes)."""
        from rag.serve.kb import UploadRejected, resolve_in_corpus

        kb = self.managed(key, user)
        try:
            path = resolve_in_corpus(self.settings_for(kb), source)
        except UploadRejected as e:
            raise KBError(str(e)) from None
        if not path.is_file():
            raise KBError(f"文件不存在：{source}")
        return self.recycle.put("document", path, source, kb.id, kb.name, user or "")

    def restorable(self, user: str | None) -> list[Item]:
        """What this user may put back: what they deleted, bases they own, documents of bases they manage;
        everything for the admin (and with login off)."""
        return [i for i in self.recycle.items() if self._may_restore(user, i)]

    def _may_restore(self, user: str | None, item: Item) -> bool:
        s = self.settings
        if not user or not s.logins() or user == s.auth_user or item.by == user:
            return True
        if item.kind == "base":
            return item.extra.get("owner") == user
        kb = self.by_id(item.kb_id)
        return kb is not None and self.can_manage(user, kb)

    def by_id(self, kb_id: str) -> KB | None:
        """A base by id whatever the user (callers check grants themselves), or None."""
        return next((b for b in self.all() if b.id == kb_id), None)

    def restore(self, item_id: str, user: str | None = None) -> tuple[Item, KB]:
        """Put a base or a document back where it was; a base whose name was taken since gets "（恢复）"."""
        try:
            item = self.recycle.get(item_id)
        except RecycleError as e:
            raise KBError(str(e)) from None
        if not self._may_restore(user, item):
            raise KBError("回收站中没有这一项（可能已超过 7 天被清除，或已恢复）")  # as if absent: no leak
        try:
            if item.kind == "document":
                kb = self.by_id(item.kb_id)
                if kb is None:
                    raise KBError(f"无法恢复{item.label}：它所在的知识库已删除，请先恢复知识库")
                self.recycle.take(item, self.settings_for(kb).corpus_dir / item.name)
                return item, kb
            with self.db.connect() as c:
                name = item.name
                while c.execute("SELECT 1 FROM kbs WHERE name = ?", (name,)).fetchone():
                    name += "（恢复）"
                self.recycle.take(item, self.settings.data_root / "kbs" / item.kb_id)
                c.execute("INSERT INTO kbs (id, name, owner, created) VALUES (?, ?, ?, ?)",
                          (item.kb_id, name, item.extra.get("owner", ""), time.time()))
                c.executemany("INSERT OR IGNORE INTO grants (user, kb_id) VALUES (?, ?)",
                              [(u, item.kb_id) for u in item.extra.get("grants", [])])
            return item, self.by_id(item.kb_id)
        except RecycleError as e:
            raise KBError(str(e)) from None

    def grant(self, user: str, key: str, revoke: bool = False) -> KB:
        """Let a user read and ask a base (`kexie grant`), or take that back."""
        kb = self.get(key, None)
        with self.db.connect() as c:
            if revoke:
                c.execute("DELETE FROM grants WHERE user = ? AND kb_id = ?", (user, kb.id))
            else:
                c.execute("INSERT OR IGNORE INTO grants (user, kb_id) VALUES (?, ?)", (user, kb.id))
        return kb

    def _shared_embedder(self):
        """The model every base embeds with, loaded once (call with the lock held)."""
        a = next(iter(self._assistants.values()), None)
        return a.retriever.embedder if a is not None else None

    def close(self) -> None:
        with self._lock:
            items, self._assistants = list(self._assistants.values()), {}
        for a in items:
            a.close()


    def _valid_name(self, name: str) -> str:
        """A display label: not empty, short, printable, and never the same as (or shaped like) an id."""
        name = re.sub(r"\s+", " ", (name or "").strip())
        if not name:
            raise KBError("知识库名称不能为空")
        if len(name) > 40 or any(not ch.isprintable() for ch in name):
            raise KBError("知识库名称过长或含不可见字符（最多 40 字）")
        with self.db.connect() as c:
            taken = c.execute("SELECT 1 FROM kbs WHERE id = ?", (name,)).fetchone() is not None
        if taken or ID_SHAPE.fullmatch(name) or name.startswith(("id:", "name:")) or name == "*":
            raise KBError(f"知识库名称不能与知识库标识相同或形如标识：{name}")
        return name
