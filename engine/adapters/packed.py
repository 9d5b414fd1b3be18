"""One adapter's weights as a cache tier holds them: the LoRA pairs the slot takes, packed into one
flat buffer, and the rest (``Extras``: pairs on linears outside the slot, whole changes of
parameters), which ``patches`` writes into the base model's own parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from framecast.engine.adapters.canonical import Deltas, Pairs


@dataclass(frozen=True)
class Extras:
    """What the slot does not hold, float32 on the host: the same object in every tier."""

    pairs: Pairs = field(default_factory=dict)  # linear outside the slot -> (lora_A [r, in], lora_B [out, r])
    deltas: Deltas = field(default_factory=dict)  # parameter -> its change

    def __bool__(self) -> bool:
        return bool(self.pairs or self.deltas)

    @property
    def parameters(self) -> list[str]:
        """The base parameters these change."""
        return sorted({f"{module}.weight" for module in self.pairs} | set(self.deltas))

    @property
    def nbytes(self) -> int:
        tensors = [t for pair in self.pairs.values() for t in pair] + list(self.deltas.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def change(self, param: str) -> torch.Tensor | None:
        """The whole change of ``param`` at strength 1 (float32), or None when these leave it alone."""
        total = self.deltas.get(param)
        module, _, kind = param.rpartition(".")
        if kind == "weight" and module in self.pairs:
            lora_a, lora_b = self.pairs[module]
            total = lora_b @ lora_a if total is None else total + lora_b @ lora_a
        return total


class PackedWeights:
    """One adapter's weights in one tier, packed into one flat buffer: ``modules`` maps each module
    to (lora_A [r, in], lora_B [out, r]) views of ``flat``. One buffer per adapter makes a move
    between tiers one copy (and one page-locked allocation), not two per module."""

    def __init__(self, flat: torch.Tensor, shapes: dict[str, tuple[torch.Size, torch.Size]], serial: int,
                 extras: Extras | None = None):  # fmt: skip
        self.flat, self.shapes, self.serial = flat, shapes, serial  # serial: the slot skips re-copying what it holds
        self.extras = extras or Extras()
        self.modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        offset = 0
        for module, (a_shape, b_shape) in shapes.items():
            a_size, b_size = a_shape.numel(), b_shape.numel()
            lora_a = flat[offset : offset + a_size].view(a_shape)
            lora_b = flat[offset + a_size : offset + a_size + b_size].view(b_shape)
            self.modules[module] = (lora_a, lora_b)
            offset += a_size + b_size
        self.rank = max((a_shape[0] for a_shape, _ in shapes.values()), default=0)
        # The extras live on the host: counted with a host copy, not a device one.
        self.nbytes = flat.numel() * flat.element_size() + (self.extras.nbytes if flat.device.type == "cpu" else 0)
        self.plan: tuple | None = None  # (slot storage, destinations, sources, zeros) of the last copy into the slot

    @classmethod
    def pack(cls, modules: Pairs, serial: int, device, dtype, pin: bool = False, extras: Extras | None = None):
        shapes = {m: (a.shape, b.shape) for m, (a, b) in modules.items()}
        total = sum(a.numel() + b.numel() for a, b in modules.values())
        packed = cls(torch.empty(total, dtype=dtype, device=device, pin_memory=pin), shapes, serial, extras)
        with torch.no_grad():
            copy_all([t for pair in packed.modules.values() for t in pair], [t for pair in modules.values() for t in pair])
        return packed

    def to(self, device: torch.device, dtype: torch.dtype, pin: bool = False) -> PackedWeights:
        """These weights on ``device`` in ``dtype``: the same object where nothing changes (CPU)."""
        if pin and device.type == "cpu" and not (self.flat.device.type == "cpu" and self.flat.is_pinned()):
            flat = torch.empty(self.flat.shape, dtype=dtype, pin_memory=True)  # page-locked: async H2D later
            flat.copy_(self.flat)
        else:
            flat = self.flat.to(device, dtype, non_blocking=True)
        return self if flat is self.flat else PackedWeights(flat, self.shapes, self.serial, self.extras)


def copy_all(destinations: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    # Fused where the tensors allow it (same device, dense); torch falls back per tensor otherwise.
    if not destinations:
        return
    if all(d.device == s.device for d, s in zip(destinations, sources)):
        torch._foreach_copy_(destinations, sources)
    else:  # an offloaded slot on the host, weights on the device
        for destination, source in zip(destinations, sources):
            destination.copy_(source, non_blocking=True)
