"""Wan2.1 image-to-video pipelines built from the real diffusers and transformers classes at
the sizes a ``WanSpec`` gives, with random weights.

One spec type describes every model framecast builds; ``PRESETS`` names three of them:

    tiny            the random test model: runs a 64x64, 9-frame clip in well under a second on a CPU
    toy             the toy model's architecture, which ``train`` trains on the toy world
    wan2.1-i2v-14b  Wan2.1-I2V-14B-480P's (UMT5-XXL, CLIP ViT-H/14, the Wan VAE, a 40-block
                    5120-wide transformer): what the benchmarks build, on a GPU or the meta device

``build_components`` / ``build_pipeline`` build any of them; ``make_tiny_model`` writes one
as a diffusers directory that ``framecast.engine.model.load_pipeline`` reads back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from framecast.engine.method.windows import VAE_TEMPORAL

# Byte-level vocabulary of the built-in models' tokenizer: every UTF-8 byte is a token, so any
# prompt tokenizes without a trained vocabulary. Ids 0..2 follow T5's convention.
_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
BYTE_LEVEL_VOCAB = len(_SPECIAL_TOKENS) + 256


@dataclass(frozen=True)
class WanSpec:
    """Sizes of a Wan2.1 I2V pipeline: every component is the real class, only sizes change.
    The defaults are the random tiny model's (``PRESETS["tiny"]``)."""

    # WanTransformer3DModel, I2V: 2 * z + 4 input channels, 2x2 patches.
    layers: int = 2
    heads: int = 2
    head_dim: int = 12
    ffn_dim: int = 48
    freq_dim: int = 32
    rope_max_seq_len: int = 32
    # UMT5 text encoder (gated-GELU feed-forward, as UMT5-XXL's). Its tokenizer is byte-level
    # whatever ``text_vocab`` is: a larger vocabulary only adds embedding rows no prompt reaches.
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2  # each of width text_dim // text_heads
    text_ffn_dim: int = 64
    text_vocab: int = BYTE_LEVEL_VOCAB
    text_position_buckets: int = 8
    text_position_max_distance: int = 32
    # CLIP vision encoder; image_dim is also the transformer's image_dim.
    image_dim: int = 32
    image_layers: int = 2
    image_heads: int = 2
    image_ffn_dim: int = 64
    image_projection_dim: int = 32  # recorded in the config only: the pipeline reads hidden states
    image_act: str = "quick_gelu"
    image_size: int = 32
    image_patch: int = 8
    # AutoencoderKLWan: 4x temporal, 2 ** (len(vae_dim_mult) - 1) spatial, as Wan2.1's 8x at 4 levels.
    vae_base_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_res_blocks: int = 1
    vae_residual: bool = False
    vae_z_dim: int = 16  # latent channels; the transformer reads 2 * z + 4 and predicts z
    vae_decoder_base_dim: int | None = None  # the decoder's base width (None: vae_base_dim), as Wan2.2's VAE allows
    flow_shift: float = 5.0
    # The clip the model is made for: the toy model trains on it, Wan2.1-I2V-14B-480P was trained at it.
    frames: int = 9
    height: int = 64
    width: int = 64
    seed: int = 0  # of the random weights

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim

    def with_layers(self, layers: int) -> WanSpec:
        """The same widths with ``layers`` blocks in the transformer and in each encoder: a
        benchmark's smoke run of a large architecture on a small machine."""
        return dataclasses.replace(self, layers=layers, text_layers=layers, image_layers=layers)

    @classmethod
    def from_dict(cls, values: dict) -> WanSpec:
        """A spec from its ``asdict`` form, as ``framecast_tiny.json`` and ``framecast_toy.json``'s
        ``"spec"`` hold it. Files written before the spec named every encoder size read as built
        then: square clips of ``size``, encoders' feed-forward twice their width."""
        values = dict(values)
        if "size" in values:
            values["height"] = values["width"] = values.pop("size")
        text_dim, image_dim = values.get("text_dim", cls.text_dim), values.get("image_dim", cls.image_dim)
        values.setdefault("text_ffn_dim", 2 * text_dim)
        values.setdefault("image_ffn_dim", 2 * image_dim)
        values.setdefault("image_projection_dim", image_dim)
        values["vae_dim_mult"] = tuple(values.get("vae_dim_mult", cls.vae_dim_mult))
        return cls(**values)


PRESETS: dict[str, WanSpec] = {
    "tiny": WanSpec(),
    # The residual VAE down/up blocks (the class's Wan2.2 option: parameter-free space-to-channel
    # shortcuts around every resampling) train several times faster from scratch than Wan2.1's.
    # The shipped model later got a decoder of base width 20 (its framecast_toy.json says so).
    "toy": WanSpec(
        layers=4, heads=4, head_dim=32, ffn_dim=512, freq_dim=64,
        vae_base_dim=12, vae_dim_mult=(1, 2, 4, 4), vae_residual=True,
        frames=17,  # sub-clips of 1, 5, 9 and 13 frames too
    ),
    # Wan2.1-I2V-14B-480P's component configs. The VAE is the class's defaults, the released one's.
    "wan2.1-i2v-14b": WanSpec(
        layers=40, heads=40, head_dim=128, ffn_dim=13824, freq_dim=256, rope_max_seq_len=1024,
        text_dim=4096, text_layers=24, text_heads=64, text_ffn_dim=10240, text_vocab=256384,
        text_position_buckets=32, text_position_max_distance=128,
        image_dim=1280, image_layers=32, image_heads=16, image_ffn_dim=5120, image_projection_dim=1024,
        image_act="gelu", image_size=224, image_patch=14,
        vae_base_dim=96, vae_dim_mult=(1, 2, 4, 4), vae_res_blocks=2,
        frames=81, height=480, width=832,
    ),
}  # fmt: skip


def preset(name: str, **overrides) -> WanSpec:
    """The spec ``PRESETS[name]``, with ``overrides`` of its fields (``preset("toy", vae_z_dim=24)``)."""
    if name not in PRESETS:
        raise ValueError(f"no model preset {name!r}; the presets are {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# ---- builders -------------------------------------------------------------------------------


def byte_level_tokenizer():
    """The built-in models' tokenizer: one token per UTF-8 byte, ``</s>`` appended (T5's ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


@contextlib.contextmanager
def _building(device: str | torch.device | None, dtype: torch.dtype | None):
    """Modules constructed inside get their parameters on ``device`` in ``dtype`` directly:
    the 14B's transformer takes 28 GB in bf16, not 56 GB in fp32 and a cast, and no memory on
    the meta device. None: torch's defaults (the CPU, fp32)."""
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield
    finally:
        torch.set_default_dtype(previous)


def build_text_encoder(spec: WanSpec, device=None, dtype=None):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=spec.text_vocab, d_model=spec.text_dim, d_kv=spec.text_dim // spec.text_heads,
        d_ff=spec.text_ffn_dim, num_layers=spec.text_layers, num_heads=spec.text_heads,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=spec.text_position_buckets,
        relative_attention_max_distance=spec.text_position_max_distance, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )  # fmt: skip
    with _building(device, dtype):
        return UMT5EncoderModel(config)


def build_image_encoder(spec: WanSpec, device=None, dtype=None):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=spec.image_dim, intermediate_size=spec.image_ffn_dim, projection_dim=spec.image_projection_dim,
        num_hidden_layers=spec.image_layers, num_attention_heads=spec.image_heads, image_size=spec.image_size,
        patch_size=spec.image_patch, hidden_act=spec.image_act,
    )  # fmt: skip
    with _building(device, dtype):
        return CLIPVisionModel(config)


def vae_temporal_downsample(dim_mult: tuple[int, ...]) -> list[bool]:
    """Which of the VAE's ``len(dim_mult) - 1`` spatial halvings also halve time: the last two,
    so time shrinks 4x as Wan2.1's does whatever the spatial factor (2 ** (len(dim_mult) - 1))."""
    if len(dim_mult) < 3:
        raise ValueError(f"vae_dim_mult needs at least 3 levels for 4x temporal compression, got {dim_mult}")
    return [False] * (len(dim_mult) - 3) + [True, True]


def build_vae(spec: WanSpec, device=None):
    """The AutoencoderKLWan at ``spec``'s sizes, in fp32 (Wan's pipelines run their VAE in fp32);
    ValueError when the class cannot take them."""
    from diffusers import AutoencoderKLWan

    temporal_downsample = vae_temporal_downsample(spec.vae_dim_mult)
    with _building(device, torch.float32):
        return AutoencoderKLWan(
            base_dim=spec.vae_base_dim,
            decoder_base_dim=spec.vae_decoder_base_dim,
            z_dim=spec.vae_z_dim,
            dim_mult=list(spec.vae_dim_mult),
            num_res_blocks=spec.vae_res_blocks,
            temperal_downsample=temporal_downsample,
            is_residual=spec.vae_residual,
            scale_factor_spatial=2 ** (len(spec.vae_dim_mult) - 1),
        )


def build_transformer(spec: WanSpec, device=None, dtype=None):
    from diffusers import WanTransformer3DModel

    with _building(device, dtype):
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=spec.heads,
            attention_head_dim=spec.head_dim,
            in_channels=2 * spec.vae_z_dim + VAE_TEMPORAL,
            out_channels=spec.vae_z_dim,
            text_dim=spec.text_dim,
            freq_dim=spec.freq_dim,
            ffn_dim=spec.ffn_dim,
            num_layers=spec.layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            image_dim=spec.image_dim,
            added_kv_proj_dim=spec.inner_dim,
            rope_max_seq_len=spec.rope_max_seq_len,
        )


def build_components(spec: WanSpec, device=None, dtype=None) -> dict:
    """The seven WanImageToVideoPipeline components at ``spec``'s sizes, freshly initialised from
    ``spec.seed`` (the modules in training mode, as constructed). ``device`` and ``dtype``: where
    and in what the text encoder, image encoder and transformer are built (None: the CPU, fp32;
    the VAE is fp32 always); on ``"meta"`` they take no memory, for measuring sizes."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    try:  # the PIL processor by its own name (transformers 5 gave ``CLIPImageProcessor`` to torchvision)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # transformers 4, where ``CLIPImageProcessor`` is the PIL one
        from transformers import CLIPImageProcessor

    torch.manual_seed(spec.seed)
    return {  # built in this order: the random weights of a seed depend on it
        "tokenizer": byte_level_tokenizer(),
        "text_encoder": build_text_encoder(spec, device, dtype),
        "image_encoder": build_image_encoder(spec, device, dtype),
        "image_processor": CLIPImageProcessor(
            size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size}
        ),
        "vae": build_vae(spec, device),
        "transformer": build_transformer(spec, device, dtype),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=spec.flow_shift),
    }


def build_pipeline(spec: WanSpec, device=None, dtype=None):
    """A random-weight WanImageToVideoPipeline of ``build_components(spec, device, dtype)``, its
    modules in eval mode as ``from_pretrained`` leaves them (no dropout)."""
    from framecast.engine.compat import use_pil_clip_processor

    use_pil_clip_processor()  # before diffusers' Wan pipeline module imports the name
    from diffusers import WanImageToVideoPipeline

    components = build_components(spec, device, dtype)
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        components[name].eval()
    return WanImageToVideoPipeline(**components)


def make_tiny_model(directory: str | Path, spec: WanSpec = PRESETS["tiny"], dtype=torch.float32) -> Path:
    """Write ``build_pipeline(spec)`` (built in fp32, stored in ``dtype``) as a diffusers directory
    that ``load_pipeline`` reads back, with the spec in ``framecast_tiny.json``."""
    directory = Path(directory)
    pipe = build_pipeline(spec)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(directory, safe_serialization=True)
    (directory / "framecast_tiny.json").write_text(json.dumps(asdict(spec), indent=2))
    return directory


def make_tiny_sam2(directory: str | Path, seed: int = 0) -> Path:
    """A SAM2 video model of transformers' classes at a tiny size (1.2 M parameters, 128 px input,
    random weights), written with ``save_pretrained``: what the tests load as a SAM2 checkpoint."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    size, hidden = 128, 128  # SAM2's memory is 64 channels wide, and its hidden size a multiple of that
    config = Sam2VideoConfig(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, image_size=[size, size],
                blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=hidden,
            backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8], [size // 16, size // 16]],
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_hidden_layers=1, num_attention_heads=1,
                                 iou_head_hidden_dim=32),
        image_size=size, memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64,
    )  # fmt: skip
    torch.manual_seed(seed)
    directory = Path(directory)
    Sam2VideoModel(config).eval().save_pretrained(directory)
    return directory
