"""Signed links to source files: a citation card's "打开原文" names the user, the base and the file.

The app signs a link only for a user who may read that base, so a user without the grant cannot make
one, and the file route checks the grant again when the link is used (grants can be withdrawn)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

TTL_S = 12 * 3600


class Signer:
    def __init__(self, data_dir: Path):
        key_file = Path(data_dir) / "link.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        self.key = key_file.read_bytes()

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()[:18]).decode()

    def token(self, user: str | None, kb_id: str, source: str, now: float | None = None) -> str:
        body = json.dumps([user or "", kb_id, source, int((now or time.time()) + TTL_S)], ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._mac(body)

    def url(self, user: str | None, kb_id: str, source: str) -> str:
        return f"/files/{quote(kb_id)}/{quote(source)}?t={self.token(user, kb_id, source)}"

    def verify(self, token: str, kb_id: str, source: str, now: float | None = None) -> str | None:
        """The user the link was made for ("" with login off), or None if forged, altered or expired."""
        try:
            body_b64, mac = token.split(".", 1)
            body = base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))
            if not hmac.compare_digest(mac, self._mac(body)):
                return None
            user, kb, src, expires = json.loads(body)
        except (ValueError, TypeError):
            return None
        if kb != kb_id or src != source or expires < (now or time.time()):
            return None
        return user
