"""Changes an adapter makes outside the LoRA slot, written into the base model's own parameters.

A LoRA pair on a block linear runs in a slot (``slots``); everything else an imported adapter
carries (a bias change, a norm's or a modulation table's change, a whole-weight ``diff``, a LoRA
on a linear outside the blocks such as ``time_projection`` or ``head``) changes a parameter of the
base model. ``ParameterPatches`` writes ``base + sum(strength * change)`` into each such
parameter in place, computed in float32 from the parameter's base value, which it keeps (on the
host) from the first change on; a parameter no active adapter changes any more gets that value
back bit for bit. Writing in place keeps the parameters' identities: nothing recompiles.

The job thread alone calls ``apply`` (``AdapterSlots.activate``, training).
"""

from __future__ import annotations

import torch

from framecast.engine.adapters.packed import Extras
from framecast.engine.errors import IncompatibleAdapter

Layer = tuple[str, int, Extras, float]  # (adapter name, its weights' serial, its extras, strength)


class ParameterPatches:
    def __init__(self, transformer):
        self.transformer = transformer
        self._kept: dict[str, torch.Tensor] = {}  # parameter -> its base value, on the host
        self._applied: tuple = ()  # (serial, strength) of each layer in effect

    @property
    def changed(self) -> list[str]:
        """The base parameters that hold an adapter's change now."""
        return sorted(self._kept)

    @property
    def kept_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._kept.values())

    def _parameter(self, name: str) -> torch.nn.Parameter:
        model = getattr(self.transformer, "_orig_mod", self.transformer)
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        module = getattr(module, "base_layer", module)  # a peft-wrapped linear: the base layer's
        return getattr(module, attribute)

    def apply(self, layers: list[Layer]) -> None:
        """Make the base parameters hold these layers' changes and no others. IncompatibleAdapter,
        before anything is written, for a change of a parameter held quantised."""
        layers = [layer for layer in layers if layer[2] and layer[3] != 0.0]
        key = tuple((serial, strength) for _, serial, _, strength in layers)
        if key == self._applied:
            return
        wanted: dict[str, list[tuple[Extras, float]]] = {}
        for name, _, extras, strength in layers:
            for param in extras.parameters:
                target = self._parameter(param)
                if not target.is_floating_point():
                    raise IncompatibleAdapter(
                        f"adapter {name!r} changes {param}, which this server holds quantised ({target.dtype}): "
                        "serve it unquantised (--quantize none), or import the adapter again with drop_unsupported "
                        "after removing that entry from its file"
                    )
                wanted.setdefault(param, []).append((extras, strength))
        with torch.no_grad():
            for param in [p for p in self._kept if p not in wanted]:
                self._parameter(param).copy_(self._kept.pop(param))
            for param, changes in wanted.items():
                target = self._parameter(param)
                if param not in self._kept:
                    self._kept[param] = target.detach().to("cpu", copy=True)
                total = self._kept[param].to(target.device, torch.float32, copy=True)  # never the kept value itself
                for extras, strength in changes:
                    total += strength * extras.change(param).to(target.device)
                target.copy_(total.view(target.shape).to(target.dtype))
        self._applied = key

    def clear(self) -> None:
        """The base model's own values everywhere (training never sees an adapter's changes)."""
        self.apply([])
