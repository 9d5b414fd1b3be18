"""The one form framecast stores an adapter in, and the layouts it writes for other tools.

Canonical keys are diffusers names under ``transformer.``, float32, with every alpha folded into
lora_B so that each LoRA runs at scale 1::

    transformer.<linear>.lora_A.weight   [r, in]
    transformer.<linear>.lora_B.weight   [out, r]
    transformer.<parameter>.diff         the change of that parameter, whole (a bias, a norm's
                                         weight, a modulation table, a weight no LoRA factors)

A trained adapter holds LoRA pairs on the block linears only, and its file is exactly what stock
diffusers loads. An imported one may also hold pairs outside the blocks and ``.diff`` changes.
"""

from __future__ import annotations

import re

import torch

from framecast.engine.adapters.keys import BLOCK_MODULES, ModelLayout, diffusers_to_wan
from framecast.engine.errors import FailedPrecondition, IncompatibleAdapter

KEY_PREFIX = "transformer."
TargetShapes = dict[str, tuple[int, int]]  # "blocks.N.<module>" -> (in_features, out_features)
Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (lora_A [r, in], lora_B [out, r])
Deltas = dict[str, torch.Tensor]  # parameter -> its change, in the parameter's shape
# The image cross-attention projections: a trained adapter leaves them alone (imports may carry them).
IMAGE_MODULES = ("attn2.add_k_proj", "attn2.add_v_proj")


def target_pattern(modules) -> str:
    """The peft ``target_modules`` regex that matches these block modules in any block."""
    return r"blocks\.\d+\.(" + "|".join(re.escape(name) for name in modules) + ")"


TARGET_PATTERN = target_pattern(BLOCK_MODULES)  # every module above: the inference slot's
TRAINING_PATTERN = target_pattern(m for m in BLOCK_MODULES if m not in IMAGE_MODULES)  # what training attaches


def target_shapes(transformer) -> TargetShapes:
    """Every block linear the LoRA slot holds in ``transformer``, with its (in, out) features."""
    return dict(ModelLayout.of(transformer).slot)


def module_sort_key(name: str) -> tuple:
    """Block order, then the order of BLOCK_MODULES within a block; names outside the blocks after."""
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        order = list(BLOCK_MODULES).index(parts[2]) if parts[2] in BLOCK_MODULES else len(BLOCK_MODULES)
        return 0, int(parts[1]), order, parts[2]
    return 1, 0, 0, name


def _shown(items: list[str], limit: int = 12) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def join_adapter(pairs: Pairs, deltas: Deltas) -> dict[str, torch.Tensor]:
    """Pairs and changes under their canonical keys."""
    out = {}
    for module in sorted(pairs, key=module_sort_key):
        out[f"{KEY_PREFIX}{module}.lora_A.weight"], out[f"{KEY_PREFIX}{module}.lora_B.weight"] = pairs[module]
    for param in sorted(deltas, key=module_sort_key):
        out[f"{KEY_PREFIX}{param}.diff"] = deltas[param]
    return out


def split_adapter(state_dict: dict[str, torch.Tensor]) -> tuple[Pairs, Deltas]:
    """Canonical keys -> (pairs in module order, changes by parameter). Raises IncompatibleAdapter
    for a key outside the canonical form or a pair missing a half."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    deltas, strays = {}, []
    for key, tensor in state_dict.items():
        name = key.removeprefix(KEY_PREFIX)
        if key.startswith(KEY_PREFIX) and name.endswith(".diff"):
            deltas[name.removesuffix(".diff")] = tensor
            continue
        module, _, part = name.rpartition(".lora_")
        if not key.startswith(KEY_PREFIX) or part not in ("A.weight", "B.weight"):
            strays.append(key)
            continue
        halves.setdefault(module, {})[part[0]] = tensor
    missing = [module for module, parts in halves.items() if len(parts) != 2]
    if strays or missing:
        raise IncompatibleAdapter(f"not a canonical framecast adapter: {_shown(sorted(strays + missing))}")
    pairs = {module: (halves[module]["A"], halves[module]["B"]) for module in sorted(halves, key=module_sort_key)}
    return pairs, deltas


def split_canonical(state_dict: dict[str, torch.Tensor]) -> Pairs:
    """The LoRA pairs of a canonical state dict that holds nothing else (a trained adapter's)."""
    pairs, deltas = split_adapter(state_dict)
    if deltas:
        raise IncompatibleAdapter(f"not a LoRA-only adapter: it changes {_shown(sorted(deltas))}")
    return pairs


def check_fits(pairs: Pairs, model: ModelLayout | TargetShapes, deltas: Deltas | None = None) -> None:
    """Raise IncompatibleAdapter unless every pair lands on a linear of ``model`` with its features
    and every change on a parameter of its shape."""
    linears = model.linears if isinstance(model, ModelLayout) else model
    parameters = model.parameters if isinstance(model, ModelLayout) else {}
    bad = []
    for module, (lora_a, lora_b) in pairs.items():
        if module not in linears:
            bad.append(f"{module} (no such layer)")
        elif (lora_a.shape[1], lora_b.shape[0]) != linears[module] or lora_a.shape[0] != lora_b.shape[1]:
            bad.append(f"{module} {list(lora_a.shape)}/{list(lora_b.shape)} vs (in, out) {linears[module]}")
    for param, delta in (deltas or {}).items():
        if param not in parameters:
            bad.append(f"{param} (no such parameter)")
        elif tuple(delta.shape) != tuple(parameters[param]):
            bad.append(f"{param} change {list(delta.shape)} vs {list(parameters[param])}")
    if bad:
        raise IncompatibleAdapter(f"the adapter does not fit this model's architecture: {_shown(bad, 8)}")


# --- writing for other tools ------------------------------------------------------------------------


def _wan_key(param: str) -> str:
    """The original-Wan key of a change: ``<module>.diff`` for a weight, ``.diff_b`` for a bias,
    ``<owner>.diff_m`` for a modulation table (LightX2V's), ``<parameter>.diff`` otherwise."""
    wan = diffusers_to_wan(param) or param
    for suffix, written in ((".weight", ".diff"), (".bias", ".diff_b"), (".modulation", ".diff_m")):
        if wan.endswith(suffix):
            return f"diffusion_model.{wan[: -len(suffix)]}{written}"
    return f"diffusion_model.{wan}.diff"


def to_comfyui(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical -> original-Wan names under ``diffusion_model.``: lora_down/lora_up and a per-module
    alpha equal to the rank (the scale is already folded into lora_up); changes as diff, diff_b and
    diff_m (ComfyUI applies diff and diff_b; LightX2V, diffusers and framecast read all three)."""
    pairs, deltas = split_adapter(state_dict)
    out = {}
    for module, (lora_a, lora_b) in pairs.items():
        base = f"diffusion_model.{diffusers_to_wan(module) or module}"
        out[f"{base}.lora_down.weight"] = lora_a.contiguous()
        out[f"{base}.lora_up.weight"] = lora_b.contiguous()
        out[f"{base}.alpha"] = torch.tensor(float(lora_a.shape[0]), dtype=torch.float32)
    for param, delta in deltas.items():
        out[_wan_key(param)] = delta.contiguous()
    return out


def to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical -> what stock diffusers' ``load_lora_weights`` reads: the pairs as they are, and a
    bias change of a module with a pair as its ``lora_B.bias`` (peft's lora_bias). Any other change
    has no diffusers form: FailedPrecondition naming them, pointing at the ComfyUI layout."""
    pairs, deltas = split_adapter(state_dict)
    out = join_adapter(pairs, {})
    others = []
    for param, delta in deltas.items():
        module, _, kind = param.rpartition(".")
        if kind == "bias" and module in pairs:
            out[f"{KEY_PREFIX}{module}.lora_B.bias"] = delta.contiguous()
        else:
            others.append(param)
    if others:
        raise FailedPrecondition(
            f"the adapter changes {len(others)} parameters stock diffusers cannot load as LoRA ({_shown(sorted(others), 6)}): "
            "export it with format COMFYUI (framecast export NAME --format comfyui), which carries them as diff keys"
        )
    return out
