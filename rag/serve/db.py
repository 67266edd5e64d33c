"""The app's own SQLite file (data_dir/kexie.db): knowledge bases, grants, conversations, feedback.

One short connection per operation (threads of the web app and the API share nothing), WAL so readers
never wait for a writer, and the schema created on first use."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS kbs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL, kb_id TEXT NOT NULL, PRIMARY KEY (user, kb_id));
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL, kbs TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, updated);
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY, conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    n INTEGER NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL, refused INTEGER NOT NULL,
    citations TEXT NOT NULL, generation TEXT NOT NULL, kb TEXT NOT NULL, notice TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS turns_conversation ON turns (conversation, n);
CREATE TABLE IF NOT EXISTS feedback (
    turn TEXT PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE, owner TEXT NOT NULL,
    rating INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '', correction TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL);
"""


class Database:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "kexie.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)  # conversations, feedback, the link key: the service account's only
        with self.connect() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)
        for f in (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            if f.exists():
                f.chmod(0o600)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction: committed on success, rolled back on error, always closed."""
        c = sqlite3.connect(self.path, timeout=30)
        c.row_factory = sqlite3.Row
        c.execute("PRAGMA foreign_keys=ON")
        try:
            with c:
                yield c
        finally:
            c.close()
