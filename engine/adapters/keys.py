"""Where each entry of a Wan LoRA file goes: the key layouts in circulation, read onto the
diffusers transformer's own module and parameter names.

The same weights travel under the original Wan names (``blocks.0.self_attn.q``) or diffusers'
(``blocks.0.attn1.to_q``), with a prefix that names the tool, and with one of several suffixes
that say what the tensor is::

    diffusion_model.blocks.0.self_attn.q.lora_down.weight   ComfyUI, original Wan, diffusion-pipe, LightX2V
    lora_unet_blocks_0_self_attn_q.lora_down.weight         musubi-tuner (kohya): Wan names, "." -> "_"
    lora_unet__blocks_0_self_attn_q.lora_down.weight        VideoX-Fun: the same under "lora_unet_" + "_"
    blocks.0.self_attn.q.lora_A.default.weight              DiffSynth-Studio: peft's, no prefix
    base_model.model.blocks.0.attn1.to_q.lora_A.weight      peft's raw state dict
    transformer.blocks.0.attn1.to_q.lora_A.weight           diffusers

    .lora_A / .lora_down   [r, in]       .lora_B / .lora_up   [out, r]      .alpha   scale = alpha / r
    .diff    the whole change of a weight (or of a parameter: ``modulation``)
    .diff_b  the change of a bias (diffusers writes it ``.lora_B.bias``)
    .diff_m  the change of a block's ``modulation`` (``blocks.N.diff_m``, ``head.diff_m``: LightX2V)

``parse_key`` reads one key onto an ``Entry`` (a diffusers target and what the tensor is), or an
``Unsupported`` saying what it is and why framecast does not apply it. The model's own names
(``ModelLayout``) decide what a name may land on, so a key of another model lands nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Original Wan name -> diffusers name, inside ``blocks.N.`` (diffusers' convert_wan_to_diffusers.py:
# its norm2 is Wan's norm3, the affine norm before cross-attention, and the other way round).
BLOCK_NAMES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "norm1": "norm1",
    "norm2": "norm3",
    "norm3": "norm2",
    "modulation": "scale_shift_table",
}
# ... and outside the blocks.
TOP_NAMES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",
    "head.head": "proj_out",
    "head.norm": "norm_out",
    "head.modulation": "scale_shift_table",
}
_BLOCK_TO_WAN = {diffusers: wan for wan, diffusers in BLOCK_NAMES.items()}
_TOP_TO_WAN = {diffusers: wan for wan, diffusers in TOP_NAMES.items()}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")

# The linears of a block the LoRA slot holds (diffusers name -> Wan name), in the order modules are listed.
BLOCK_MODULES = {name: _BLOCK_TO_WAN[name] for name in (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
    "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj", "ffn.net.2")}  # fmt: skip


def _rename(name: str, block: Mapping[str, str], top: Mapping[str, str]) -> str | None:
    """``name`` (a module or a parameter of one) with its module part renamed by the tables; None
    when no entry covers it."""
    match = _BLOCK.fullmatch(name)
    rest, table, head = (match[2], block, f"blocks.{match[1]}.") if match else (name, top, "")
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return head + new + rest[len(old) :]
    return None


def wan_to_diffusers(name: str) -> str | None:
    """The diffusers name of an original Wan module or parameter name (no prefix)."""
    return _rename(name, BLOCK_NAMES, TOP_NAMES)


def diffusers_to_wan(name: str) -> str | None:
    """The original Wan name of a diffusers module or parameter name (what ComfyUI's files carry)."""
    return _rename(name, _BLOCK_TO_WAN, _TOP_TO_WAN)


# --- the model's names ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLayout:
    """What an adapter may change in one transformer, by diffusers name."""

    parameters: Mapping[str, tuple[int, ...]]  # every parameter; a quantised linear's weight as [out, in]
    linears: Mapping[str, tuple[int, int]]  # module -> (in_features, out_features)
    convs: Mapping[str, tuple[int, ...]]  # convolution module -> its weight's shape
    slot: Mapping[str, tuple[int, int]]  # the block linears the LoRA slot holds: module -> (in, out)
    underscored: Mapping[str, str]  # Wan name with "_" for "." (kohya keys) -> diffusers module or parameter

    @classmethod
    def of(cls, transformer) -> ModelLayout:
        """Read once, before any adapter is attached (peft-wrapped and quantised linears report the
        base layer). A T2V model has no add_k_proj/add_v_proj and lists none."""
        import torch

        parameters, linears, convs = {}, {}, {}
        for name, module in transformer.named_modules():
            name = name.removeprefix("_orig_mod.")
            if "lora_" in name or name.endswith(".base_layer") or ".base_layer." in name:
                continue
            base = getattr(module, "base_layer", module)
            if isinstance(base, torch.nn.Linear) or hasattr(base, "in_features") and hasattr(base, "out_features"):
                linears[name] = (int(base.in_features), int(base.out_features))
            elif isinstance(base, torch.nn.modules.conv._ConvNd):
                convs[name] = tuple(base.weight.shape)
            for param_name, param in base.named_parameters(recurse=False):
                shape = (linears[name][1], linears[name][0]) if name in linears and param_name == "weight" else tuple(param.shape)
                parameters[f"{name}.{param_name}" if name else param_name] = shape
        slot = {}
        for index, _ in enumerate(transformer.blocks):
            for module in BLOCK_MODULES:
                if f"blocks.{index}.{module}" in linears:
                    slot[f"blocks.{index}.{module}"] = linears[f"blocks.{index}.{module}"]
        return cls(parameters, linears, convs, slot, _underscored([*linears, *convs, *parameters, *_norm_modules(parameters)]))

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, int]]) -> ModelLayout:
        """A model of these linears alone (module -> (in, out)), all of them the slot's."""
        parameters = {f"{module}.weight": (out, in_) for module, (in_, out) in shapes.items()}
        return cls(parameters, dict(shapes), {}, dict(shapes), _underscored(shapes))


def _underscored(names) -> dict[str, str]:
    """Wan names with "_" for "." (how kohya-style keys spell them) -> the diffusers names."""
    table = {}
    for name in names:
        wan = diffusers_to_wan(name)
        if wan is not None:
            table.setdefault(wan.replace(".", "_"), name)
    return table


def _norm_modules(parameters) -> list[str]:
    """Modules that own a weight or bias parameter (norms included), by name."""
    return sorted({p.rsplit(".", 1)[0] for p in parameters if p.endswith((".weight", ".bias"))})


# --- reading a key ----------------------------------------------------------------------------------

# Suffix -> what the tensor is: "A"/"B" a LoRA half, "alpha" its scale, "bias" a bias change scaled as
# the LoRA is (diffusers/peft's lora_B.bias), "diff"/"diff_b"/"diff_m" a change applied as it is.
_SUFFIXES = (
    (".lora_A.default.weight", "A"), (".lora_B.default.weight", "B"), (".lora_B.default.bias", "bias"),
    (".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias"),
    (".lora_down.weight", "A"), (".lora_up.weight", "B"), (".alpha", "alpha"),
    (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"), (".w_norm", "diff"), (".b_norm", "diff_b"),
)  # fmt: skip
_UNSUPPORTED = (
    ((".dora_scale", ".lora_magnitude_vector", ".lora_magnitude_vector.default"), "a DoRA magnitude: DoRA adapters are not applied"),
    ((".lora_mid.weight",), "a LoCon/Tucker middle factor: only two-factor LoRA is applied"),
    ((".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2"), "a LoHa factor: LyCORIS LoHa is not applied"),
    ((".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2"), "a LoKr factor: LyCORIS LoKr is not applied"),
    ((".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight"), "a GLoRA factor: GLoRA is not applied"),
    ((".set_weight",), "a replacement weight (set_weight): only changes are applied"),
)  # fmt: skip
# Prefix -> (layout, naming): "wan" original names, "diffusers" the model's own, "either" the
# model's first, "kohya" Wan names with "_" for ".".
_PREFIXES = (
    ("lora_unet__", "videox-fun", "kohya"), ("lora_unet_", "musubi", "kohya"),
    ("model.diffusion_model.", "comfyui", "wan"), ("diffusion_model.", "comfyui", "wan"),
    ("base_model.model.", "peft", "either"), ("transformer.", "diffusers", "diffusers"),
)  # fmt: skip
_OTHER_PARTS = ("lora_te", "text_encoder", "te1_", "te2_", "clip", "vae.", "image_encoder")


@dataclass(frozen=True)
class Entry:
    key: str  # as in the file
    target: str  # a diffusers module (A, B, alpha, bias) or parameter (diff)
    kind: str  # A | B | alpha | bias | diff
    layout: str  # diffusers | peft | comfyui | musubi | videox-fun | diffsynth


@dataclass(frozen=True)
class Unsupported:
    key: str
    why: str


def _suffix(key: str) -> tuple[str, str] | tuple[None, str]:
    for suffix, kind in _SUFFIXES:
        if key.endswith(suffix):
            return kind, key[: -len(suffix)]
    for suffixes, why in _UNSUPPORTED:
        if key.endswith(suffixes):
            return None, why
    return None, ""


def _resolve(name: str, naming: str, model: ModelLayout) -> str | None:
    """The diffusers module or parameter ``name`` means under ``naming``; None when the model has none."""
    if naming == "kohya":
        return model.underscored.get(name)
    own = name if naming in ("diffusers", "either") and _exists(name, model) else None
    if own is not None or naming == "diffusers":
        return own
    renamed = wan_to_diffusers(name)
    return renamed if renamed is not None and _exists(renamed, model) else None


def _exists(name: str, model: ModelLayout) -> bool:
    return name in model.parameters or name in model.linears or name in model.convs or any(
        f"{name}.{p}" in model.parameters for p in ("weight", "bias"))  # fmt: skip


def parse_key(key: str, model: ModelLayout) -> Entry | Unsupported:
    """Where one tensor of a LoRA file goes in ``model``, or why it goes nowhere."""
    kind, stem = _suffix(key)
    if kind is None:
        return Unsupported(key, stem or "not a LoRA entry framecast knows (lora_A/B, lora_down/up, alpha, diff, diff_b, diff_m)")
    layout, naming, name = "diffsynth", "either", stem
    for prefix, prefix_layout, prefix_naming in _PREFIXES:
        if stem.startswith(prefix):
            layout, naming, name = prefix_layout, prefix_naming, stem[len(prefix) :]
            break
    if layout == "diffsynth" and _exists(name, model):  # the model's own names, unprefixed: diffusers'
        layout = "diffusers"
    if kind == "diff_m":  # the change of <name>.modulation (Wan), <name>.scale_shift_table (diffusers)
        sep = "_" if naming == "kohya" else "."
        candidates = [f"{name}{sep}modulation", f"{name}{sep}scale_shift_table"]
        target = next((t for t in (_resolve(c, naming, model) for c in candidates) if t in model.parameters), None)
        kind = "diff"
    else:
        target = _resolve(name, naming, model)
        if target is not None and kind in ("diff", "diff_b"):
            param = target if target in model.parameters and kind == "diff" else f"{target}.{'weight' if kind == 'diff' else 'bias'}"
            target, kind = (param, "diff") if param in model.parameters else (None, kind)
    if target is None:
        lowered = key.lower()
        if any(part in lowered for part in _OTHER_PARTS):
            return Unsupported(key, "belongs to another component (a text or image encoder): framecast applies the transformer's")
        return Unsupported(key, f"names nothing in this model ({_named(name, naming)})")
    if kind in ("A", "B", "alpha", "bias") and target not in model.linears and target not in model.convs:
        return Unsupported(key, f"is a LoRA factor of {target}, which is not a linear or convolution layer")
    return Entry(key, target, kind, layout)


def _named(name: str, naming: str) -> str:
    return {"kohya": "Wan module names with '_'", "wan": "original Wan names", "diffusers": "diffusers names"}.get(
        naming, "diffusers or original Wan names") + f": {name or '(top level)'}"  # fmt: skip
