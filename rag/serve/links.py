"""Signed links to source files: a citation card's "打开原文" names the user, the base and the file.

The app signs a link only for a user who may read that base, so a user without the grant cannot make
one, and the file route checks the grant again when the link is used (grants can be withdrawn). A link
carries the login mode it was minted under: one made while logins were off names no user, and turning
logins on invalidates it. `kexie link-key --rotate` invalidates every link at once."""

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
        self.key_file = Path(data_dir) / "link.key"
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.key_file.exists():
            write_key(self.key_file)
        self._stamp: tuple[int, int] | None = None
        self._key = b""

    @property
    def key(self) -> bytes:
        """The current key, re-read when the file changes (a rotation takes effect without a restart)."""
        st = self.key_file.stat()
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._key, self._stamp = self.key_file.read_bytes(), stamp
        return self._key

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()[:18]).decode()

    def token(self, user: str | None, kb_id: str, source: str, now: float | None = None) -> str:
        mode = "login" if user else "open"
        body = json.dumps([user or "", kb_id, source, int((now or time.time()) + TTL_S), mode], ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._mac(body)

    def url(self, user: str | None, kb_id: str, source: str) -> str:
        return f"/files/{quote(kb_id)}/{quote(source)}?t={self.token(user, kb_id, source)}"

    def verify(self, token: str, kb_id: str, source: str, now: float | None = None, logins_on: bool = False) -> str | None:
        """The user the link was made for ("" with login off), or None if forged, altered, expired, or made
        while logins were off and they are on now."""
        try:
            body_b64, mac = token.split(".", 1)
            body = base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))
            if not hmac.compare_digest(mac, self._mac(body)):
                return None
            user, kb, src, expires, mode = json.loads(body)
        except (ValueError, TypeError):
            return None
        if kb != kb_id or src != source or expires < (now or time.time()):
            return None
        if mode not in ("open", "login") or (mode == "login") != bool(user) or (logins_on and mode != "login"):
            return None
        return user


def write_key(key_file: Path) -> None:
    """A new random key, readable by the service account only; replaces any old one atomically."""
    tmp = key_file.with_name(f".{key_file.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    os.replace(tmp, key_file)
