"""Crash points for the crash-safety tests: KEXIE_FAULT=<stage> SIGKILLs the process exactly there (the
indexer's commit steps and the vector backfill's writes). A module of its own, so that neither of the two
imports the other for it."""

from __future__ import annotations

import os
import signal


def fault_point(stage: str) -> None:
    if os.environ.get("KEXIE_FAULT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)
