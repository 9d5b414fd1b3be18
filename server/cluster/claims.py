"""Adapter names claimed once across a cluster.

A single server refuses a second training of a name under its queue's lock; a cluster has many
processes, so the claim is a file on the shared directory, ``<data>/cluster/claims/<name>``,
created exclusively: written under a name of its own, then hard-linked to the claim's name, which
fails when the name exists (atomic on a local file system and over NFS, as ``O_EXCL`` is on NFS
v3+), so of two fronts claiming a name at once exactly one creates it, and nobody reads a claim
before its holder is in it. It holds the id of the job (or import) that claimed it and is removed
when that ends. A claim whose job is over (its record in the shared job records says so) or that
names no job the records know after ``grace_s`` is stale, left by a front that died: the next
claimant replaces it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from framecast.common.media import atomic_write
from framecast.engine.adapters.store import check_adapter_name
from framecast.engine.errors import FailedPrecondition

CLAIMS_DIR = "cluster/claims"  # under the data directory


class AdapterClaims:
    def __init__(self, root: str | Path, is_over: Callable[[str], bool | None], grace_s: float = 60.0):
        """``is_over(holder)``: whether the job a claim names has ended (True), is live (False) or is
        unknown (None: no record of it)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._is_over = is_over
        self.grace_s = grace_s

    def _path(self, name: str) -> Path:
        return self.root / check_adapter_name(name)

    def claim(self, name: str, holder: str, field: str = "adapter") -> None:
        """Claim ``name`` for ``holder`` (a job id); FailedPrecondition naming the holder when a live
        job has it."""
        check_adapter_name(name, field)
        path = self._path(name)
        for _ in range(3):
            if self._create(path, holder):
                return
            other = self.holder(name)
            if other is not None and not self._stale(path, other):
                raise FailedPrecondition(f"adapter {name!r} is already being trained by job {other}")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its front died; retry the exclusive create
        raise FailedPrecondition(f"adapter {name!r} is being claimed by another front at the same time; retry")

    def _create(self, path: Path, holder: str) -> bool:
        """Create ``path`` holding ``holder`` unless it exists, in one step: written to a file of
        its own, then hard-linked to ``path`` (``link`` fails on an existing name, on NFS too)."""
        written = self.root / f".{path.name}.{secrets.token_hex(6)}.tmp"
        written.write_text(holder)
        try:
            os.link(written, path)
        except FileExistsError:
            return False
        finally:
            written.unlink(missing_ok=True)
        return True

    def holder(self, name: str) -> str | None:
        """The job holding ``name``'s claim, or None."""
        try:
            return self._path(name).read_text().strip()
        except FileNotFoundError:
            return None

    def held(self, name: str) -> bool:
        holder = self.holder(name)
        return holder is not None and not self._stale(self._path(name), holder)

    def relabel(self, name: str, holder: str, new_holder: str) -> None:
        """Name ``new_holder`` (the job id, once a replica accepted the job) in ``holder``'s claim."""
        if self.holder(name) == holder:
            atomic_write(self._path(name), new_holder.encode())

    def release(self, name: str, holder: str) -> None:
        """Drop ``holder``'s claim on ``name`` (nothing if another holds it now)."""
        if self.holder(name) == holder:
            with contextlib.suppress(FileNotFoundError):
                self._path(name).unlink()

    def _stale(self, path: Path, holder: str) -> bool:
        over = self._is_over(holder)
        if over is not None:
            return over
        try:
            return time.time() - path.stat().st_mtime > self.grace_s
        except FileNotFoundError:
            return True
