"""Adapters on disk.

An adapter is a directory ``<root>/<name>/`` with ``adapter.safetensors`` (LoRA weights in the
canonical form of ``formats``: diffusers keys, float32, alpha folded into lora_B) and
``adapter.json`` (its record). Both are written atomically, the record last: an adapter
without a record is an interrupted write, ignored and removed at start-up. A training that failed leaves only
``failure.txt`` (why), so the adapter still reads FAILED after a restart; training the name
again or deleting it removes the file. Two empty marker files keep what the server knew of an
adapter in memory across a restart: ``last_used`` (its mtime) and ``pinned``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from framecast.common.media import atomic_write, fsync_dir, remove_interrupted_writes
from framecast.engine.adapters.canonical import join_adapter, split_adapter, to_comfyui, to_diffusers
from framecast.engine.errors import AdapterExists, AdapterFailed, AdapterNotFound, IncompatibleAdapter, InvalidInput

WEIGHTS_FILE = "adapter.safetensors"
RECORD_FILE = "adapter.json"
FAILURE_FILE = "failure.txt"
USED_FILE = "last_used"  # empty; its mtime is when the adapter was last used or loaded
PINNED_FILE = "pinned"  # empty; present while the adapter is pinned, so a pin outlives a restart
MAX_NAME_LENGTH = 64
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
EXPORT_LAYOUTS = ("diffusers", "comfyui")


def check_adapter_name(name: str, field_name: str = "adapter") -> str:
    """Adapter names become directory names (and, prefixed, peft adapter names): letters, digits, '_' and '-',
    1-64 chars, starting with a letter or digit (so no path separator, no '..', no hidden file)."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):  # fullmatch: "$" lets a final newline through
        raise InvalidInput(field_name, name, "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return name


@dataclass
class AdapterRecord:
    name: str
    base_model: str
    rank: int  # the largest rank of any module
    alpha: float  # = rank once stored: the scale is folded into lora_B
    target_modules: list[str]
    training: dict
    source_media_id: str
    final_loss: float
    created_at: float = field(default_factory=time.time)
    size_bytes: int = 0
    rank_pattern: dict[str, int] = field(default_factory=dict)  # modules whose rank is not ``rank``
    origin: str = "trained"  # "trained" or "imported from <layout>"
    deltas: list[str] = field(default_factory=list)  # parameters it changes whole (an import's diff, diff_b, diff_m)
    dropped: list[str] = field(default_factory=list)  # "<key>: <why>" of each entry its import left out, on request
    # How to sample with it as an accelerator (``--preset turbo``): PropagateJob settings such as
    # steps, guidance_scale and shift, as its publisher gives them; empty for a clip's adapter.
    sampling: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterRecord:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def lora_config(self) -> dict:
        """The peft LoraConfig arguments, keyed by component as diffusers reads them
        ("transformer.r", ...) from a file's ``lora_adapter_metadata``."""
        config = {"r": self.rank, "lora_alpha": self.alpha, "target_modules": self.target_modules, "lora_dropout": 0.0}
        if any(param.endswith(".bias") and param.rsplit(".", 1)[0] in self.target_modules for param in self.deltas):
            config["lora_bias"] = True  # bias changes travel as lora_B.bias
        if self.rank_pattern:
            # Each module at its own rank, at scale 1 (alpha = rank): the scale is folded in.
            config["rank_pattern"] = dict(self.rank_pattern)
            config["alpha_pattern"] = {module: float(rank) for module, rank in self.rank_pattern.items()}
        return {f"transformer.{key}": value for key, value in config.items()}


def file_metadata(record: AdapterRecord, layout: str) -> dict[str, str]:
    """safetensors metadata of an adapter file: rank, alpha, targets, base model, training settings."""
    metadata = {
        "format": "pt",
        "framecast.adapter": record.to_json(),
        "framecast.layout": layout,
        "framecast.rank": str(record.rank),
        "framecast.alpha": f"{record.alpha:g}",
        "framecast.target_modules": json.dumps(record.target_modules),
        "framecast.base_model": record.base_model,
        "framecast.training": json.dumps(record.training, sort_keys=True),
    }
    if layout == "diffusers":
        # diffusers reads the LoraConfig from here, keyed by component ("transformer.r", ...).
        metadata["lora_adapter_metadata"] = json.dumps(record.lora_config())
    return metadata


def serialize_adapter(state_dict: dict[str, torch.Tensor], record: AdapterRecord, layout: str = "diffusers") -> bytes:
    """Weights + metadata as one safetensors file: ``diffusers`` (what stock diffusers'
    load_lora_weights reads; FailedPrecondition for changes it has no form for) or ``comfyui``
    (original Wan names, changes as diff keys)."""
    from safetensors.torch import save

    if layout not in EXPORT_LAYOUTS:
        raise InvalidInput("format", layout, f"must be one of {', '.join(EXPORT_LAYOUTS)}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tensors = to_comfyui(tensors) if layout == "comfyui" else to_diffusers(tensors)
    return save(tensors, metadata=file_metadata(record, layout))


def stored_file(state_dict: dict[str, torch.Tensor], record: AdapterRecord) -> bytes:
    """The file the store keeps: the canonical keys as they are (a LoRA-only adapter's is its diffusers export)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata=file_metadata(record, "canonical" if record.deltas else "diffusers"))


def canonicalise(state_dict: dict[str, torch.Tensor], record: AdapterRecord) -> dict[str, torch.Tensor]:
    """Fold a uniform alpha into lora_B (B * alpha / rank) and fill the record's rank fields
    from the weights, so that the stored adapter runs at scale 1 everywhere. Whole changes
    (``.diff``) are kept as they are."""
    modules, deltas = split_adapter(state_dict)
    scale = record.alpha / record.rank if record.rank and not record.rank_pattern else 1.0
    modules = {module: (lora_a, lora_b * scale if scale != 1.0 else lora_b) for module, (lora_a, lora_b) in modules.items()}
    ranks = {module: int(lora_a.shape[0]) for module, (lora_a, _) in modules.items()}
    record.rank = max(ranks.values(), default=0)
    record.alpha = float(record.rank)
    record.rank_pattern = {module: r for module, r in ranks.items() if r != record.rank}
    record.target_modules = list(modules)
    record.deltas = sorted(deltas)
    return join_adapter(modules, deltas)


class AdapterStore:
    """Adapters persisted under one directory. Thread-safe for concurrent readers and one writer."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        return self.root / check_adapter_name(name)

    def remove_interrupted_writes(self) -> None:
        """Remove what a crash left half-written; for start-up, while nothing writes. That is
        temporary files, and directories with neither an adapter nor a failed training: a save
        stopped before its record landed, a delete stopped after its record went."""
        remove_interrupted_writes(self.root)
        for directory in self.root.iterdir():
            if directory.is_dir() and not any((directory / file).is_file() for file in (RECORD_FILE, FAILURE_FILE)):
                shutil.rmtree(directory, ignore_errors=True)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / RECORD_FILE).is_file()

    def save(self, state_dict: dict[str, torch.Tensor], record: AdapterRecord, replace: bool = True) -> AdapterRecord:
        """Store weights then record. ``state_dict`` keys carry the ``transformer.`` prefix; a
        uniform alpha other than the rank is folded into lora_B first (``canonicalise``).
        With ``replace`` off, an existing adapter of that name raises AdapterExists."""
        directory = self._dir(record.name)
        state_dict = canonicalise(state_dict, record)
        blob = stored_file(state_dict, record)
        record.size_bytes = len(blob)
        with self._lock:
            if not replace and (directory / RECORD_FILE).is_file():
                raise AdapterExists(record.name)
            # Remove a stale record first: until the new one lands the adapter does not exist.
            (directory / RECORD_FILE).unlink(missing_ok=True)
            try:
                atomic_write(directory / WEIGHTS_FILE, blob)
                atomic_write(directory / RECORD_FILE, record.to_json().encode())
            except BaseException:  # not stored (a full disk): leave no weights behind
                (directory / WEIGHTS_FILE).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # kept while it holds a failed training's error
                    directory.rmdir()
                raise
            (directory / FAILURE_FILE).unlink(missing_ok=True)
        return record

    def record_failure(self, name: str, message: str) -> None:
        """Keep why training ``name`` failed; ``failures`` ignores it while an adapter of that name is stored."""
        with self._lock:
            atomic_write(self._dir(name) / FAILURE_FILE, message.encode())

    def failures(self) -> dict[str, str]:
        """Adapters whose training failed and that are not stored: name -> why."""
        found = {}
        for path in sorted(self.root.glob(f"*/{FAILURE_FILE}")):
            if (path.parent / RECORD_FILE).is_file():
                continue
            try:
                found[path.parent.name] = path.read_text()
            except OSError:
                continue
        return found

    def clear_failure(self, name: str) -> None:
        """Forget a failed training of ``name``: its directory goes too unless an adapter is stored there."""
        directory = self._dir(name)
        with self._lock:
            (directory / FAILURE_FILE).unlink(missing_ok=True)
            if directory.is_dir() and not (directory / RECORD_FILE).is_file():
                shutil.rmtree(directory, ignore_errors=True)

    def mark_used(self, name: str, when: float) -> None:
        """Keep when ``name`` was last used, across restarts (a no-op once it is deleted)."""
        path = self._dir(name) / USED_FILE
        try:
            path.touch()
            os.utime(path, (when, when))
        except FileNotFoundError:  # deleted meanwhile: its directory is gone
            pass

    def last_used(self) -> dict[str, float]:
        """Stored adapters that have been used: name -> unix seconds of the last use."""
        found = {}
        for path in self.root.glob(f"*/{USED_FILE}"):
            if (path.parent / RECORD_FILE).is_file():
                try:
                    found[path.parent.name] = path.stat().st_mtime
                except FileNotFoundError:
                    continue
        return found

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Keep (or drop) the pin of stored adapter ``name`` across restarts."""
        path = self._dir(name) / PINNED_FILE
        with self._lock:
            if pinned:
                if not (path.parent / RECORD_FILE).is_file():  # deleted meanwhile
                    return
                path.touch()
            elif path.exists():
                path.unlink(missing_ok=True)
            else:
                return
            fsync_dir(path.parent)

    def pinned(self) -> list[str]:
        """Stored adapters that were pinned."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{PINNED_FILE}") if (p.parent / RECORD_FILE).is_file())

    def record(self, name: str) -> AdapterRecord:
        """The stored adapter's record. Raises AdapterFailed when only a failed training of that
        name is kept (with its error), else AdapterNotFound when there is none."""
        path = self._dir(name) / RECORD_FILE
        try:
            return AdapterRecord.from_json(path.read_text())
        except FileNotFoundError:
            pass
        try:
            error = (self._dir(name) / FAILURE_FILE).read_text()
        except OSError:
            raise AdapterNotFound(name) from None
        raise AdapterFailed(name, error)

    def weights_path(self, name: str) -> Path:
        self.record(name)
        return self._dir(name) / WEIGHTS_FILE

    def load(self, name: str) -> tuple[dict[str, torch.Tensor], AdapterRecord]:
        """Weights (on the CPU) and record. A stored file that cannot be read raises IncompatibleAdapter."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        record = self.record(name)
        try:
            return load_file(self._dir(name) / WEIGHTS_FILE), record
        except FileNotFoundError:
            raise AdapterNotFound(name) from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise IncompatibleAdapter(f"stored adapter {name!r} cannot be read: {exc}") from None

    def list(self) -> list[AdapterRecord]:
        records = []
        for path in sorted(self.root.glob(f"*/{RECORD_FILE}")):
            try:
                records.append(AdapterRecord.from_json(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
        return records

    def delete(self, name: str) -> None:
        directory = self._dir(name)
        with self._lock:
            if not (directory / RECORD_FILE).is_file():
                raise AdapterNotFound(name)
            (directory / RECORD_FILE).unlink()
            fsync_dir(directory)  # the delete is durable once the record is gone
            shutil.rmtree(directory, ignore_errors=True)

    def export(self, name: str, layout: str = "diffusers") -> bytes:
        """The adapter as one safetensors file in ``layout`` (``diffusers`` or ``comfyui``), with metadata."""
        if layout not in EXPORT_LAYOUTS:
            raise InvalidInput("format", layout, f"must be one of {', '.join(EXPORT_LAYOUTS)}")
        state_dict, record = self.load(name)
        return serialize_adapter(state_dict, record, layout)
