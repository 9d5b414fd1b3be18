"""LoRA file formats for the Wan2.1 transformer: reading the files people have, writing what tools read.

The same weights travel under three key layouts:

    diffusers / peft      transformer.blocks.0.attn1.to_q.lora_A.weight         lora_B; alpha in metadata
    original Wan, ComfyUI diffusion_model.blocks.0.self_attn.q.lora_down.weight  lora_up; <module>.alpha
    kohya / musubi-tuner  lora_unet_blocks_0_self_attn_q.lora_down.weight        lora_up; <module>.alpha

``normalise`` turns any of them into the one form framecast stores (diffusers keys, float32,
alpha folded into lora_B so every module runs at scale 1). Every key must land on a linear
layer of this transformer with matching shapes, or the whole file is refused: an adapter
is never half-applied. Only safetensors are read (``read_safetensors``): a pickle is never
unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

import torch

from framecast.engine.errors import IncompatibleAdapter, InvalidInput

KEY_PREFIX = "transformer."
MAX_RANK = 1024
MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on the JSON header

# The linear layers of a Wan transformer block an adapter may target: diffusers name -> original Wan
# name. attn1 is self-attention, attn2 cross-attention to the text (and, in I2V, the CLIP image
# tokens through add_k_proj / add_v_proj).
BLOCK_MODULES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_FROM_WAN = {wan: diffusers for diffusers, wan in BLOCK_MODULES.items()}
_FROM_MUSUBI = {wan.replace(".", "_"): diffusers for diffusers, wan in BLOCK_MODULES.items()}
# The image cross-attention projections: a trained adapter leaves them alone (imports may carry them).
IMAGE_MODULES = ("attn2.add_k_proj", "attn2.add_v_proj")


def target_pattern(modules) -> str:
    """The peft ``target_modules`` regex that matches these block modules in any block."""
    return r"blocks\.\d+\.(" + "|".join(re.escape(name) for name in modules) + ")"


TARGET_PATTERN = target_pattern(BLOCK_MODULES)  # every module above: the inference slot's
TRAINING_PATTERN = target_pattern(m for m in BLOCK_MODULES if m not in IMAGE_MODULES)  # what training attaches

_PARTS = {"lora_A": "A", "lora_down": "A", "lora_B": "B", "lora_up": "B"}
_DOTTED_KEY = re.compile(
    r"^(?P<prefix>transformer\.|base_model\.model\.|diffusion_model\.)?blocks\.(?P<block>\d+)\.(?P<module>[\w.]+?)"
    r"\.(?:(?P<part>lora_A|lora_B|lora_down|lora_up)\.weight|(?P<alpha>alpha))$"
)
_MUSUBI_KEY = re.compile(
    r"^lora_unet_blocks_(?P<block>\d+)_(?P<module>\w+?)\.(?:(?P<part>lora_down|lora_up)\.weight|(?P<alpha>alpha))$"
)

TargetShapes = dict[str, tuple[int, int]]  # "blocks.N.<module>" -> (in_features, out_features)


def target_shapes(transformer) -> TargetShapes:
    """Every linear an adapter may target in ``transformer``, with its (in, out) features.

    Read once, before any adapter is attached; quantised and peft-wrapped linears report the
    base layer's features. A T2V model has no add_k_proj/add_v_proj and lists none."""
    shapes: TargetShapes = {}
    for index, block in enumerate(transformer.blocks):
        for name in BLOCK_MODULES:
            try:
                module = block.get_submodule(name)
            except AttributeError:
                continue
            module = getattr(module, "base_layer", module)
            shapes[f"blocks.{index}.{name}"] = (int(module.in_features), int(module.out_features))
    return shapes


def module_sort_key(module: str) -> tuple[int, int]:
    """Block order, then the order of BLOCK_MODULES within a block."""
    _, block, name = module.split(".", 2)
    return int(block), list(BLOCK_MODULES).index(name) if name in BLOCK_MODULES else len(BLOCK_MODULES)


@dataclass(frozen=True)
class ParsedKey:
    module: str  # "blocks.N.<diffusers module>"
    part: str  # "A", "B" or "alpha"
    layout: str  # "diffusers", "comfyui" or "musubi"


def parse_key(key: str) -> ParsedKey | None:
    """Where a tensor of a LoRA file goes, in any of the three layouts; None when nowhere."""
    match = _MUSUBI_KEY.match(key)
    if match:
        name, layout = _FROM_MUSUBI.get(match["module"]), "musubi"
    else:
        match = _DOTTED_KEY.match(key)
        if not match:
            return None
        if match["module"] in BLOCK_MODULES:
            name = match["module"]
            layout = "comfyui" if match["prefix"] == "diffusion_model." else "diffusers"
        else:
            name, layout = _FROM_WAN.get(match["module"]), "comfyui"
    if name is None:
        return None
    part = "alpha" if match["alpha"] else _PARTS[match["part"]]
    return ParsedKey(f"blocks.{int(match['block'])}.{name}", part, layout)


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
    """An adapter in framecast's canonical form."""

    state_dict: dict[str, torch.Tensor]  # transformer.blocks.N.<module>.lora_A/B.weight, float32, alpha folded
    ranks: dict[str, int]  # module -> rank
    layout: str  # the layout most keys came in: diffusers | comfyui | musubi

    @property
    def rank(self) -> int:
        return max(self.ranks.values())

    @property
    def target_modules(self) -> list[str]:
        return sorted(self.ranks, key=module_sort_key)

    @property
    def rank_pattern(self) -> dict[str, int]:
        """Ranks of the modules whose rank is not ``rank`` (empty for a uniform adapter)."""
        return {module: r for module, r in self.ranks.items() if r != self.rank}


def _shown(items: list[str], limit: int = 12) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


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


def normalise(tensors: dict[str, torch.Tensor], metadata: dict[str, str], shapes: TargetShapes) -> NormalisedLora:
    """Map a LoRA file onto this transformer's modules and fold its alphas.

    Raises IncompatibleAdapter listing the keys that match no target (another architecture,
    or a LoRA of something else), the modules whose shapes do not fit, and pairs missing a half.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    layouts: Counter[str] = Counter()
    unmatched, duplicated = [], []
    for key, tensor in tensors.items():
        parsed = parse_key(key)
        if parsed is None or parsed.module not in shapes:
            unmatched.append(key)
            continue
        parts = pairs.setdefault(parsed.module, {})
        if parsed.part in parts:
            duplicated.append(key)
        parts[parsed.part] = tensor
        layouts[parsed.layout] += 1
    if unmatched:
        raise IncompatibleAdapter(
            f"{len(unmatched)} of {len(tensors)} keys match no LoRA target of this model "
            f"({len(shapes)} linears in blocks 0-{len(shapes) and max(int(m.split('.')[1]) for m in shapes)}): "
            f"{_shown(sorted(unmatched))}"
        )
    if duplicated:
        raise IncompatibleAdapter(f"keys name the same weight twice (mixed layouts?): {_shown(sorted(duplicated))}")
    if not pairs:
        raise IncompatibleAdapter("the file holds no LoRA weights")

    settings = _peft_settings(metadata) if layouts["diffusers"] else {}
    alpha_patterns = _alpha_patterns(settings.get("alpha_pattern"))
    default_alpha = _number(settings["lora_alpha"], "lora_adapter_metadata.lora_alpha") if "lora_alpha" in settings else None
    if settings.get("use_dora"):
        raise IncompatibleAdapter("DoRA adapters are not supported (lora_adapter_metadata has use_dora)")
    rslora = bool(settings.get("use_rslora"))

    state_dict, ranks, problems = {}, {}, []
    for module in sorted(pairs, key=module_sort_key):
        parts = pairs[module]
        lora_a, lora_b = parts.get("A"), parts.get("B")
        if lora_a is None or lora_b is None:
            problems.append(f"{module}: lora_{'A' if lora_a is None else 'B'} (down/up) missing")
            continue
        in_features, out_features = shapes[module]
        rank = lora_a.shape[0] if lora_a.ndim == 2 else -1
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[1] != in_features or lora_b.shape != (out_features, rank):
            problems.append(
                f"{module}: lora_A {list(lora_a.shape)} / lora_B {list(lora_b.shape)}, "
                f"this model needs [r, {in_features}] / [{out_features}, r]"
            )
            continue
        if not (lora_a.is_floating_point() and lora_b.is_floating_point()) or not 1 <= rank <= MAX_RANK:
            problems.append(f"{module}: needs floating-point weights of rank 1-{MAX_RANK} (got {lora_a.dtype}, rank {rank})")
            continue
        if "alpha" in parts:
            if parts["alpha"].numel() != 1:
                problems.append(f"{module}: alpha must be one number, got shape {list(parts['alpha'].shape)}")
                continue
            alpha = float(parts["alpha"].reshape(()).float())
        else:
            alpha = _pattern_value(alpha_patterns, module, rank if default_alpha is None else default_alpha)
        scale = alpha / (math.sqrt(rank) if rslora else rank)
        weight_a = lora_a.to(torch.float32).contiguous()
        weight_b = lora_b.to(torch.float32)
        weight_b = (weight_b * scale if scale != 1.0 else weight_b).contiguous()
        if not (torch.isfinite(weight_a).all() and torch.isfinite(weight_b).all()):
            problems.append(f"{module}: weights are not finite")
            continue
        state_dict[f"{KEY_PREFIX}{module}.lora_A.weight"] = weight_a
        state_dict[f"{KEY_PREFIX}{module}.lora_B.weight"] = weight_b
        ranks[module] = rank
    if problems:
        raise IncompatibleAdapter(f"the adapter does not fit this model's architecture: {_shown(problems, 8)}")
    return NormalisedLora(state_dict, ranks, layouts.most_common(1)[0][0])


# --- the canonical form -------------------------------------------------------------------------


def split_canonical(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Canonical keys -> {module: (lora_A [r, in], lora_B [out, r])}, in module order.
    Raises IncompatibleAdapter for a key outside the canonical form or a missing half."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    strays = []
    for key, tensor in state_dict.items():
        module, _, part = key.removeprefix(KEY_PREFIX).rpartition(".lora_")
        if not key.startswith(KEY_PREFIX) or part not in ("A.weight", "B.weight"):
            strays.append(key)
            continue
        halves.setdefault(module, {})[part[0]] = tensor
    missing = [module for module, parts in halves.items() if len(parts) != 2]
    if strays or missing:
        raise IncompatibleAdapter(f"not a canonical framecast adapter: {_shown(sorted(strays + missing))}")
    return {module: (halves[module]["A"], halves[module]["B"]) for module in sorted(halves, key=module_sort_key)}


def check_fits(modules: dict[str, tuple[torch.Tensor, torch.Tensor]], shapes: TargetShapes) -> None:
    """Raise IncompatibleAdapter unless every module exists in ``shapes`` with matching features."""
    bad = []
    for module, (lora_a, lora_b) in modules.items():
        if module not in shapes:
            bad.append(f"{module} (no such layer)")
        elif (lora_a.shape[1], lora_b.shape[0]) != shapes[module] or lora_a.shape[0] != lora_b.shape[1]:
            bad.append(f"{module} {list(lora_a.shape)}/{list(lora_b.shape)} vs (in, out) {shapes[module]}")
    if bad:
        raise IncompatibleAdapter(f"the adapter does not fit this model's architecture: {_shown(bad, 8)}")


def to_comfyui(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical -> original-Wan names under ``diffusion_model.``, lora_down/lora_up and a per-module
    alpha equal to the rank (the scale is already folded into lora_up)."""
    out = {}
    for module, (lora_a, lora_b) in split_canonical(state_dict).items():
        _, block, name = module.split(".", 2)
        base = f"diffusion_model.blocks.{block}.{BLOCK_MODULES[name]}"
        out[f"{base}.lora_down.weight"] = lora_a.contiguous()
        out[f"{base}.lora_up.weight"] = lora_b.contiguous()
        out[f"{base}.alpha"] = torch.tensor(float(lora_a.shape[0]), dtype=torch.float32)
    return out
