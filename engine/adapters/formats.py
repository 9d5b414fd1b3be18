"""LoRA files for the Wan2.1 transformer: reading the files people have, in every published layout.

``normalise`` reads a file's tensors onto this transformer (``keys``: ComfyUI / original Wan,
diffusion-pipe, LightX2V, musubi-tuner, VideoX-Fun, DiffSynth-Studio, peft, diffusers) and into
the one form framecast stores (``canonical``: diffusers keys, float32, alpha folded into lora_B):
LoRA pairs on any linear, and whole changes (``.diff``, ``.diff_b``, ``.diff_m``, ``lora_B.bias``)
of any parameter. An entry that lands on this model is applied exactly; one framecast cannot
apply (LoHa, LoKr, DoRA, a text encoder's, a name this model lacks) refuses the file naming it
(InvalidInput), unless the import asks to drop such entries, and then it lists what it dropped.
Shapes of another architecture refuse the whole file (IncompatibleAdapter): an adapter is never
half-applied. Only safetensors are read (``read_safetensors``): a pickle is never unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from framecast.engine.adapters.canonical import (  # noqa: F401 (re-exported: the canonical form's names)
    IMAGE_MODULES,
    KEY_PREFIX,
    TARGET_PATTERN,
    TRAINING_PATTERN,
    Deltas,
    Pairs,
    TargetShapes,
    _shown,
    check_fits,
    join_adapter,
    module_sort_key,
    split_adapter,
    split_canonical,
    target_pattern,
    target_shapes,
    to_comfyui,
    to_diffusers,
)
from framecast.engine.adapters.keys import BLOCK_MODULES, Entry, ModelLayout, parse_key  # noqa: F401
from framecast.engine.errors import IncompatibleAdapter, InvalidInput

MAX_RANK = 1024
MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on the JSON header
DROP_HINT = ("import with drop_unsupported (framecast import --drop-unsupported) to import the rest without them, "
             "or remove them from the file")  # fmt: skip


# --- reading ------------------------------------------------------------------------------------


def read_safetensors(data: bytes, field: str = "data") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file held in memory. Anything else (a pickled
    .pt/.ckpt, a truncated or corrupt file) raises InvalidInput naming ``field``; nothing is
    unpickled, ever."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = bytes(data)
    header_bytes = int.from_bytes(data[:8], "little")
    # The header's length comes first, so a safetensors file may begin as a pickle does: look at its header first.
    if len(data) < 10 or header_bytes > min(MAX_HEADER_BYTES, len(data) - 8) or data[8:9] != b"{":
        if data[:2] == b"PK" or data[:1] == b"\x80":
            raise InvalidInput(field, f"{len(data)} bytes", "is a pickle (.pt/.ckpt/.bin), which is never read: convert it to safetensors")
        if len(data) < 10:
            raise InvalidInput(field, f"{len(data)} bytes", "is not a safetensors file (too short)")
        raise InvalidInput(field, f"{len(data)} bytes", "is not a safetensors file (bad header)")
    try:
        header = json.loads(data[8 : 8 + header_bytes])
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InvalidInput(field, f"{len(data)} bytes", f"is not a valid safetensors file: {exc}") from None
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInput(field, "__metadata__", "must map strings to strings")
    return tensors, metadata


@dataclass
class NormalisedLora:
    """An adapter in framecast's canonical form, and what the file held that it does not keep."""

    pairs: Pairs  # module -> (lora_A [r, in], lora_B [out, r]) float32, alpha folded into lora_B
    deltas: Deltas  # parameter -> its change, float32
    layout: str  # the layout most keys came in: diffusers | peft | comfyui | musubi | videox-fun | diffsynth
    dropped: list[str] = field(default_factory=list)  # "<key>: <why>" of each entry dropped on request

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return join_adapter(self.pairs, self.deltas)

    @property
    def ranks(self) -> dict[str, int]:
        return {module: int(lora_a.shape[0]) for module, (lora_a, _) in self.pairs.items()}

    @property
    def rank(self) -> int:
        return max(self.ranks.values(), default=0)

    @property
    def target_modules(self) -> list[str]:
        return sorted(self.pairs, key=module_sort_key)

    @property
    def rank_pattern(self) -> dict[str, int]:
        """Ranks of the modules whose rank is not ``rank`` (empty for a uniform adapter)."""
        return {module: r for module, r in self.ranks.items() if r != self.rank}


def _peft_settings(metadata: dict[str, str]) -> dict:
    """The LoraConfig diffusers would read from a file's ``lora_adapter_metadata`` ("transformer.r", ...)."""
    text = metadata.get("lora_adapter_metadata")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError:
        raise IncompatibleAdapter("the file's lora_adapter_metadata is not JSON") from None
    if not isinstance(config, dict):
        return {}
    return {key.removeprefix(KEY_PREFIX): value for key, value in config.items() if key.startswith(KEY_PREFIX)}


_MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")


def _number(value, field: str) -> float:
    """A finite number from a file's metadata; InvalidInput naming where it was otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise InvalidInput(field, value, "must be a finite number")
    return number


def _alpha_patterns(patterns) -> dict[str, float]:
    """A peft ``alpha_pattern`` as module names (or dotted suffixes of them) -> alpha. Its keys are
    matched as names, never compiled as regular expressions (a file's regex could be invalid or
    take exponential time): a key that is not a plain module name is refused, naming it."""
    field = "lora_adapter_metadata.alpha_pattern"
    if patterns is None:
        return {}
    if not isinstance(patterns, dict):
        raise InvalidInput(field, patterns, "must be an object of module names to alphas")
    names = {}
    for key, value in patterns.items():
        if not isinstance(key, str) or not _MODULE_NAME.fullmatch(key):
            raise InvalidInput(field, key, "is not a module name (framecast matches names and dotted suffixes of "
                               "them, never regular expressions)")  # fmt: skip
        names[key] = _number(value, f"{field}[{key!r}]")
    return names


def _pattern_value(patterns: dict[str, float], module: str, default: float) -> float:
    for name, value in patterns.items():
        if module == name or module.endswith("." + name):
            return value
    return default


def _float(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    out = tensor.to(torch.float32)
    return (out * scale if scale != 1.0 else out).contiguous()


def normalise(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], model: ModelLayout | TargetShapes,
    drop_unsupported: bool = False,
) -> NormalisedLora:  # fmt: skip
    """Map a LoRA file onto this transformer's modules and parameters and fold its alphas.

    Raises InvalidInput naming the entries framecast cannot apply (unless ``drop_unsupported``:
    then they are left out and listed in ``dropped``), IncompatibleAdapter for a file nothing of
    which lands on this model, shapes of another architecture, pairs missing a half and the same
    weight named twice.
    """
    model = model if isinstance(model, ModelLayout) else ModelLayout.from_shapes(model)
    entries, unsupported = [], []
    for key in tensors:
        parsed = parse_key(key, model)
        (entries if isinstance(parsed, Entry) else unsupported).append(parsed)
    if not entries:
        if not tensors:
            raise IncompatibleAdapter("the file holds no LoRA weights")
        raise IncompatibleAdapter(f"none of the file's {len(tensors)} keys lands on this model (a LoRA of another "
                                  f"model?): {_shown([f'{u.key} ({u.why})' for u in unsupported], 6)}")  # fmt: skip

    parts: dict[str, dict[str, torch.Tensor]] = {}
    changes: dict[str, torch.Tensor] = {}
    layouts: Counter[str] = Counter()
    duplicated = []
    for entry in entries:
        held = changes if entry.kind == "diff" else parts.setdefault(entry.target, {})
        slot = entry.target if entry.kind == "diff" else entry.kind
        if slot in held:
            duplicated.append(entry.key)
        held[slot] = tensors[entry.key]
        layouts[entry.layout] += 1
    for module, held in parts.items():
        if "bias" in held and f"{module}.bias" in changes:
            duplicated.append(f"{module}.bias (lora_B.bias and diff_b)")
    if duplicated:
        raise IncompatibleAdapter(f"keys name the same weight twice (mixed layouts?): {_shown(sorted(duplicated))}")

    settings = _peft_settings(metadata) if layouts["diffusers"] or layouts["peft"] else {}
    alpha_patterns = _alpha_patterns(settings.get("alpha_pattern"))
    default_alpha = _number(settings["lora_alpha"], "lora_adapter_metadata.lora_alpha") if "lora_alpha" in settings else None
    if settings.get("use_dora"):
        raise IncompatibleAdapter("DoRA adapters are not supported (lora_adapter_metadata has use_dora)")
    rslora = bool(settings.get("use_rslora"))

    pairs, deltas, problems = {}, {}, []
    for module in sorted(parts, key=module_sort_key):
        held = parts[module]
        lora_a, lora_b = held.get("A"), held.get("B")
        if lora_a is None and lora_b is None:  # a bias change alone (an alpha alone changes nothing)
            if "bias" in held:
                changes[f"{module}.bias"] = held["bias"]
            continue
        if lora_a is None or lora_b is None:
            problems.append(f"{module}: lora_{'A' if lora_a is None else 'B'} (down/up) missing")
            continue
        conv = module in model.convs
        rank = lora_a.shape[0] if lora_a.ndim >= 2 else -1
        if conv:
            out_features, in_size = model.convs[module][0], math.prod(model.convs[module][1:])
            fits = lora_a[0].numel() == in_size and lora_b.shape[0] == out_features and lora_b[0].numel() == rank
        else:
            in_features, out_features = model.linears[module]
            fits = lora_a.ndim == 2 and lora_b.ndim == 2 and lora_a.shape[1] == in_features and lora_b.shape == (out_features, rank)
        if not fits:
            needs = f"[r, {in_features}] / [{out_features}, r]" if not conv else f"factors of a {list(model.convs[module])} weight"
            problems.append(f"{module}: lora_A {list(lora_a.shape)} / lora_B {list(lora_b.shape)}, this model needs {needs}")
            continue
        if not (lora_a.is_floating_point() and lora_b.is_floating_point()) or not 1 <= rank <= MAX_RANK:
            problems.append(f"{module}: needs floating-point weights of rank 1-{MAX_RANK} (got {lora_a.dtype}, rank {rank})")
            continue
        if "alpha" in held:
            if held["alpha"].numel() != 1:
                problems.append(f"{module}: alpha must be one number, got shape {list(held['alpha'].shape)}")
                continue
            alpha = float(held["alpha"].reshape(()).float())
        else:
            alpha = _pattern_value(alpha_patterns, module, rank if default_alpha is None else default_alpha)
        scale = alpha / (math.sqrt(rank) if rslora else rank)
        if "bias" in held:  # peft's lora_B bias runs at the LoRA's scale
            changes[f"{module}.bias"] = _float(held["bias"], scale)
        if conv:  # a convolution's LoRA as the change of its weight (patch_embedding: small)
            weight = (_float(lora_b).reshape(out_features, rank) @ _float(lora_a).reshape(rank, -1)) * scale
            if f"{module}.weight" in changes:
                problems.append(f"{module}.weight: changed both by a LoRA and by a diff")
            changes[f"{module}.weight"] = weight.reshape(model.convs[module])
            continue
        weight_a, weight_b = _float(lora_a), _float(lora_b, scale)
        if not (torch.isfinite(weight_a).all() and torch.isfinite(weight_b).all()):
            problems.append(f"{module}: weights are not finite")
            continue
        pairs[module] = (weight_a, weight_b)
    for param in sorted(changes, key=module_sort_key):
        delta, shape = changes[param], tuple(model.parameters[param])
        if tuple(delta.shape) != shape and [d for d in delta.shape if d != 1] == [d for d in shape if d != 1]:
            delta = delta.reshape(shape)  # a modulation saved [6, dim] for [1, 6, dim]
        if tuple(delta.shape) != shape:
            problems.append(f"{param}: change {list(delta.shape)}, this model's is {list(shape)}")
        elif not delta.is_floating_point() or not torch.isfinite(delta).all():
            problems.append(f"{param}: the change must be finite floating-point numbers")
        else:
            deltas[param] = _float(delta)
    if problems:
        raise IncompatibleAdapter(f"the adapter does not fit this model's architecture: {_shown(problems, 8)}")
    if unsupported and not drop_unsupported:  # after the shapes: a file of another model is refused as that
        raise InvalidInput("data", f"{len(unsupported)} of {len(tensors)} keys",
                           f"holds entries framecast cannot apply: {_shown([f'{u.key} {u.why}' for u in unsupported], 6)}; "
                           + DROP_HINT)  # fmt: skip
    if not pairs and not deltas:
        raise IncompatibleAdapter("the file holds nothing this model can apply once its unsupported entries are dropped")
    return NormalisedLora(pairs, deltas, layouts.most_common(1)[0][0], [f"{u.key}: {u.why}" for u in unsupported])
