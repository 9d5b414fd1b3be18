"""Adapters on disk and on the model.

On disk an adapter is a directory ``<root>/<name>/`` with ``adapter.safetensors`` (LoRA
weights in diffusers' key layout, ``transformer.blocks.N.attn1.to_q.lora_A.weight``) and
``adapter.json`` (its record). Both are written atomically, the record last: an adapter
without a record is an interrupted write and is ignored.

On the model, adapters are peft adapters of the transformer named after the adapter; many
stay attached at once and a job activates the one it needs, so switching never reloads
the base model.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from framecast.engine.errors import AdapterNotFound, IncompatibleAdapter, InvalidInput
from framecast.engine.media import atomic_write

WEIGHTS_FILE = "adapter.safetensors"
RECORD_FILE = "adapter.json"
KEY_PREFIX = "transformer."
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_adapter_name(name: str, field_name: str = "adapter") -> str:
    """Adapter names become directory and peft adapter names: letters, digits, '_' and '-', 1-64 chars."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise InvalidInput(field_name, name, "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return name


@dataclass
class AdapterRecord:
    name: str
    base_model: str
    rank: int
    alpha: float
    target_modules: list[str]
    training: dict
    source_media_id: str
    final_loss: float
    created_at: float = field(default_factory=time.time)
    size_bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AdapterRecord":
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def lora_config(self) -> dict:
        """The peft LoraConfig arguments, keyed by component as diffusers reads them
        ("transformer.r", ...) from a file's ``lora_adapter_metadata``."""
        config = {"r": self.rank, "lora_alpha": self.alpha, "target_modules": self.target_modules, "lora_dropout": 0.0}
        return {f"transformer.{key}": value for key, value in config.items()}


def serialize_adapter(state_dict: dict[str, torch.Tensor], record: AdapterRecord) -> bytes:
    """Weights + metadata as one safetensors file that stock diffusers' load_lora_weights reads."""
    from safetensors.torch import save

    metadata = {
        "format": "pt",
        # diffusers reads the LoraConfig from here, keyed by component ("transformer.r", ...).
        "lora_adapter_metadata": json.dumps(record.lora_config()),
        "framecast.adapter": record.to_json(),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata=metadata)


class AdapterStore:
    """Adapters persisted under one directory. Thread-safe for concurrent readers and one writer."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        return self.root / check_adapter_name(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / RECORD_FILE).is_file()

    def save(self, state_dict: dict[str, torch.Tensor], record: AdapterRecord) -> AdapterRecord:
        """Store weights then record. ``state_dict`` keys carry the ``transformer.`` prefix."""
        directory = self._dir(record.name)
        blob = serialize_adapter(state_dict, record)
        record.size_bytes = len(blob)
        with self._lock:
            # Remove a stale record first: until the new one lands the adapter does not exist.
            (directory / RECORD_FILE).unlink(missing_ok=True)
            atomic_write(directory / WEIGHTS_FILE, blob)
            atomic_write(directory / RECORD_FILE, record.to_json().encode())
        return record

    def record(self, name: str) -> AdapterRecord:
        path = self._dir(name) / RECORD_FILE
        try:
            return AdapterRecord.from_json(path.read_text())
        except FileNotFoundError:
            raise AdapterNotFound(name) from None

    def weights_path(self, name: str) -> Path:
        self.record(name)
        return self._dir(name) / WEIGHTS_FILE

    def load(self, name: str) -> tuple[dict[str, torch.Tensor], AdapterRecord]:
        from safetensors.torch import load_file

        record = self.record(name)
        return load_file(self._dir(name) / WEIGHTS_FILE), record

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
            shutil.rmtree(directory, ignore_errors=True)

    def export_diffusers(self, name: str) -> bytes:
        return self.weights_path(name).read_bytes()


class AdapterSlots:
    """Adapters attached to the transformer, least recently used detached first."""

    def __init__(self, transformer, capacity: int = 8):
        self.transformer = transformer
        self.capacity = capacity
        self._attached: OrderedDict[str, AdapterRecord] = OrderedDict()
        self._to_detach: set[str] = set()
        self._lock = threading.Lock()

    @property
    def attached(self) -> list[str]:
        return [name for name in list(self._attached) if name not in self._to_detach]

    def detach_later(self, name: str) -> None:
        """Ask for ``name`` to be detached by the thread that runs the model, at its next ``flush``."""
        with self._lock:
            self._to_detach.add(name)

    def flush(self) -> None:
        with self._lock:
            names, self._to_detach = self._to_detach, set()
        for name in names:
            self.detach(name)

    def add_trainable(self, name: str, rank: int, alpha: float, seed: int) -> None:
        """Attach a fresh adapter to train: lora_A random from ``seed``, lora_B = 0, so it
        starts as the identity and the same seed gives the same adapter."""
        from peft import LoraConfig

        from framecast.engine.training import LORA_TARGET_PATTERN

        self.detach(name)
        self._make_room()
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGET_PATTERN)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.transformer.add_adapter(config, adapter_name=name)
        self.transformer.set_adapter(name)
        self.transformer.enable_lora()  # a base-model-only job may have disabled LoRA layers
        for param_name, param in self.transformer.named_parameters():
            is_lora = f".{name}." in param_name and "lora_" in param_name
            param.requires_grad_(is_lora)
            if is_lora:
                param.data = param.data.float()  # train adapter weights in fp32 on a bf16 base
        self._attached[name] = None  # record filled in by the caller once trained

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        weights = get_peft_model_state_dict(self.transformer, adapter_name=name)
        return {KEY_PREFIX + key: value.detach().clone() for key, value in weights.items()}

    def finish_training(self, name: str, record: AdapterRecord) -> None:
        for param in self.transformer.parameters():
            param.requires_grad_(False)
        self._attached[name] = record
        self._attached.move_to_end(name)

    def activate(self, name: str, store: AdapterStore) -> AdapterRecord:
        """Make ``name`` the one adapter in effect, attaching it from the store if needed."""
        if name not in self._attached:
            state_dict, record = store.load(name)
            self._make_room()
            try:
                self.transformer.load_lora_adapter(
                    state_dict, adapter_name=name, prefix="transformer", metadata=record.lora_config()
                )
            except Exception as exc:
                self.detach(name)
                raise IncompatibleAdapter(f"adapter {name!r} does not fit the loaded base model: {exc}") from None
            self._attached[name] = record
        self._attached.move_to_end(name)
        self.transformer.set_adapter(name)
        self.transformer.enable_lora()
        for param in self.transformer.parameters():
            param.requires_grad_(False)
        return self._attached[name]

    def deactivate(self) -> None:
        """Run the bare base model (adapters stay attached, unused)."""
        if self._attached:
            self.transformer.disable_lora()

    def detach(self, name: str) -> bool:
        if name not in self._attached:
            return False
        del self._attached[name]
        self.transformer.delete_adapters(name)
        return True

    def _make_room(self) -> None:
        while len(self._attached) >= self.capacity:
            oldest = next(iter(self._attached))
            self.detach(oldest)
