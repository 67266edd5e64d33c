"""Saved conversations and answer feedback, per owner (a login name, or a browser id with login off).

Every read and write names the owner, so one user's conversations are never reachable with another's
name, whatever id is sent."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from rag.answer.wording import DOC_MARK
from rag.models import Answer
from rag.serve.db import Database

TITLE_CHARS = 30


class NotFound(Exception):
    """No such conversation or turn for this owner (the same either way: ids of others do not leak)."""


@dataclass
class Conversation:
    id: str
    title: str
    kbs: list[str]
    created: float
    updated: float


@dataclass
class Turn:
    id: str
    n: int
    question: str
    answer: str
    refused: bool
    citations: list[dict]  # Citation.to_json() plus support / spans: enough to redraw the cards
    generation: str
    kb: str
    notice: str = ""
    retrieved: list[dict] = field(default_factory=list)  # refused answers: the closest passages shown
    rating: int = 0  # +1 / -1 / 0 (none)
    comment: str = ""
    correction: str = ""
    faq: dict | None = None  # the curated pair answered first (FaqMatch.to_json()), if any
    created: float = 0.0  # when it was answered (epoch seconds)


@dataclass
class Feedback:
    turn: str
    owner: str
    rating: int
    comment: str
    correction: str
    created: float
    question: str
    answer: str
    refused: bool
    citations: list[dict]
    generation: str
    kb: str
    conversation: str
    document: str = ""  # the document answer alone (`answer` without a curated answer joined before it)
    curated: str = ""  # the curated answer (标准答案) given first, if any


def citations_json(a: Answer) -> list[dict]:
    return [{**c.to_json(), "support": c.support, "spans": [list(s) for s in c.spans]} for c in a.citations]


class History:
    def __init__(self, db: Database):
        self.db = db
        _keep_parts_apart(db)

    # -- conversations ---------------------------------------------------------------------
    def list(self, owner: str) -> list[Conversation]:
        with self.db.connect() as c:
            rows = c.execute("SELECT * FROM conversations WHERE owner = ? ORDER BY updated DESC", (owner,)).fetchall()
        return [Conversation(r["id"], r["title"], _split(r["kbs"]), r["created"], r["updated"]) for r in rows]

    def create(self, owner: str, title: str, kbs: list[str] = ()) -> str:
        cid, now = uuid.uuid4().hex, time.time()
        with self.db.connect() as c:
            c.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
                      (cid, owner, _title(title), ",".join(kbs), now, now))
        return cid

    def get(self, owner: str, cid: str) -> Conversation:
        with self.db.connect() as c:
            r = c.execute("SELECT * FROM conversations WHERE id = ? AND owner = ?", (cid, owner)).fetchone()
        if r is None:
            raise NotFound(cid)
        return Conversation(r["id"], r["title"], _split(r["kbs"]), r["created"], r["updated"])

    def rename(self, owner: str, cid: str, title: str) -> None:
        with self.db.connect() as c:
            if c.execute("UPDATE conversations SET title = ? WHERE id = ? AND owner = ?",
                         (_title(title), cid, owner)).rowcount == 0:
                raise NotFound(cid)

    def delete(self, owner: str, cid: str) -> None:
        with self.db.connect() as c:
            if c.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (cid, owner)).rowcount == 0:
                raise NotFound(cid)

    # -- turns -----------------------------------------------------------------------------
    def add_turn(self, owner: str, cid: str, a: Answer, kb: str, kbs: list[str] = ()) -> str:
        self.get(owner, cid)  # owner check
        tid, now = uuid.uuid4().hex, time.time()
        retrieved = [{**h.to_json(), "label": h.label, "note": h.note, "ocr": h.chunk.ocr} for h in a.retrieved[:3]] if a.refused else []
        with self.db.connect() as c:
            c.execute("BEGIN IMMEDIATE")  # two tabs of one conversation never get the same turn number
            n = c.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM turns WHERE conversation = ?", (cid,)).fetchone()[0]
            c.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (tid, cid, n, a.question, a.answer, int(a.refused),
                       json.dumps({"citations": citations_json(a), "retrieved": retrieved,
                                  "faq": a.faq.to_json() if a.faq is not None else None,
                                  **({"document": a.document} if a.faq is not None else {})}, ensure_ascii=False),
                       a.generation, kb, a.notice, now))
            c.execute("UPDATE conversations SET updated = ?, kbs = ? WHERE id = ?", (now, ",".join(kbs), cid))
        return tid

    def turns(self, owner: str, cid: str) -> list[Turn]:
        self.get(owner, cid)
        with self.db.connect() as c:
            rows = c.execute(
                "SELECT t.*, f.rating, f.comment, f.correction FROM turns t LEFT JOIN feedback f ON f.turn = t.id "
                "WHERE t.conversation = ? ORDER BY t.n", (cid,)).fetchall()
        out = []
        for r in rows:
            blob = json.loads(r["citations"])
            out.append(Turn(r["id"], r["n"], r["question"], r["answer"], bool(r["refused"]), blob["citations"],
                            r["generation"], r["kb"], r["notice"], blob.get("retrieved", []), r["rating"] or 0,
                            r["comment"] or "", r["correction"] or "", blob.get("faq"), r["created"]))
        return out

    # -- feedback --------------------------------------------------------------------------
    def rate(self, owner: str, turn_id: str, rating: int, comment: str = "", correction: str = "") -> None:
        """👍 (+1) / 👎 (-1) on one answer; rating again replaces the earlier one."""
        if rating not in (1, -1):
            raise ValueError("rating must be 1 or -1")
        with self.db.connect() as c:
            ok = c.execute("SELECT 1 FROM turns t JOIN conversations v ON v.id = t.conversation "
                           "WHERE t.id = ? AND v.owner = ?", (turn_id, owner)).fetchone()
            if ok is None:
                raise NotFound(turn_id)
            c.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (turn) DO UPDATE SET "
                      "rating = excluded.rating, comment = excluded.comment, correction = excluded.correction, "
                      "created = excluded.created",
                      (turn_id, owner, rating, (comment or "").strip(), (correction or "").strip(), time.time()))

    def unrate(self, owner: str, turn_id: str) -> None:
        with self.db.connect() as c:
            c.execute("DELETE FROM feedback WHERE turn = ? AND owner = ?", (turn_id, owner))

    def feedback(self, owner: str | None = None, rating: int | None = None) -> list[Feedback]:
        """Feedback newest first: one owner's (None: everyone's, for the CLI export), optionally only 👍 or 👎."""
        sql = ("SELECT f.*, t.question, t.answer, t.refused, t.citations, t.generation, t.kb, t.conversation "
               "FROM feedback f JOIN turns t ON t.id = f.turn WHERE 1 = 1")
        args: list = []
        if owner is not None:
            sql += " AND f.owner = ?"
            args.append(owner)
        if rating is not None:
            sql += " AND f.rating = ?"
            args.append(rating)
        with self.db.connect() as c:
            rows = c.execute(sql + " ORDER BY f.created DESC", args).fetchall()
        out = []
        for r in rows:
            blob = json.loads(r["citations"])
            out.append(Feedback(r["turn"], r["owner"], r["rating"], r["comment"], r["correction"], r["created"],
                                r["question"], r["answer"], bool(r["refused"]), blob["citations"], r["generation"],
                                r["kb"], r["conversation"], blob.get("document", r["answer"]),
                                (blob.get("faq") or {}).get("answer", "")))
        return out


def _keep_parts_apart(db: Database) -> None:
    """Rows saved before the curated and the document answer were kept apart hold them joined in `answer`
    (rag.answer.wording.with_curated): split them once, so that nothing reads the marks back afterwards."""
    with db.connect() as c:
        rows = c.execute("SELECT id, answer, citations FROM turns WHERE json_type(citations, '$.faq') = 'object' "
                         "AND json_type(citations, '$.document') IS NULL").fetchall()
        for r in rows:
            blob = json.loads(r["citations"])
            _, _, blob["document"] = r["answer"].partition(DOC_MARK)
            c.execute("UPDATE turns SET citations = ? WHERE id = ?", (json.dumps(blob, ensure_ascii=False), r["id"]))


def _title(text: str) -> str:
    t = " ".join((text or "").split())
    return (t[:TITLE_CHARS] + "…") if len(t) > TITLE_CHARS else (t or "新对话")


def _split(s: str) -> list[str]:
    return [x for x in (s or "").split(",") if x]
