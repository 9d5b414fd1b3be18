"""Builders of Wan2.1 image-to-video pipelines from the real diffusers and transformers
classes at given sizes: the random tiny model the tests use, the toy model's sizes, and the
14B architecture the benchmarks build with random weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from framecast.engine.conditioning import VAE_TEMPORAL

# Byte-level vocabulary of the built-in model's tokenizer: every UTF-8 byte is a token,
# so any prompt tokenizes without a trained vocabulary. Ids 0..2 follow T5's convention.
_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


@dataclass(frozen=True)
class WanSpec:
    """Sizes of a shrunk Wan2.1 I2V pipeline: every component is the real class, only widths
    shrink. The defaults are the random tiny model's, which runs a 64x64, 9-frame clip in well
    under a second on a CPU; the trained toy model (``ToyModelSpec``) widens them."""

    # WanTransformer3DModel, I2V: 2 * 16 + 4 = 36 input channels, 2x2 patches.
    layers: int = 2
    heads: int = 2
    head_dim: int = 12
    ffn_dim: int = 48
    freq_dim: int = 32
    # UMT5 text encoder and CLIP vision encoder.
    text_dim: int = 32
    text_layers: int = 2
    image_dim: int = 32  # CLIP vision hidden size; the transformer's image_dim
    image_size: int = 32
    # AutoencoderKLWan: 8x spatial, 4x temporal, 16 latent channels, as Wan2.1's.
    vae_base_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_res_blocks: int = 1
    vae_residual: bool = False
    vae_z_dim: int = 16  # latent channels; the transformer reads 2 * z + 4 and predicts z
    vae_decoder_base_dim: int | None = None  # the decoder's base width (None: vae_base_dim), as Wan2.2's VAE allows
    flow_shift: float = 5.0
    seed: int = 0

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim


def _byte_level_tokenizer():
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


def vae_temporal_downsample(dim_mult: tuple[int, ...]) -> list[bool]:
    """Which of the VAE's ``len(dim_mult) - 1`` spatial halvings also halve time: the last two,
    so time shrinks 4x as Wan2.1's does whatever the spatial factor (2 ** (len(dim_mult) - 1))."""
    if len(dim_mult) < 3:
        raise ValueError(f"vae_dim_mult needs at least 3 levels for 4x temporal compression, got {dim_mult}")
    return [False] * (len(dim_mult) - 3) + [True, True]


def build_vae(spec: WanSpec):
    """The AutoencoderKLWan at ``spec``'s sizes; ValueError when the class cannot take them."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=spec.vae_base_dim,
        decoder_base_dim=spec.vae_decoder_base_dim,
        z_dim=spec.vae_z_dim,
        dim_mult=list(spec.vae_dim_mult),
        num_res_blocks=spec.vae_res_blocks,
        temperal_downsample=vae_temporal_downsample(spec.vae_dim_mult),
        is_residual=spec.vae_residual,
        scale_factor_spatial=2 ** (len(spec.vae_dim_mult) - 1),
    )


def wan_components(spec: WanSpec) -> dict:
    """The seven WanImageToVideoPipeline components of the real classes at ``spec``'s sizes,
    freshly initialised from ``spec.seed``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    try:  # the PIL processor by its own name (transformers 5 gave ``CLIPImageProcessor`` to torchvision)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # transformers 4, where ``CLIPImageProcessor`` is the PIL one
        from transformers import CLIPImageProcessor

    torch.manual_seed(spec.seed)
    tokenizer = _byte_level_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=spec.text_dim, d_kv=spec.text_dim // 2, d_ff=2 * spec.text_dim,
            num_layers=spec.text_layers, num_heads=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=32, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=spec.image_dim, intermediate_size=2 * spec.image_dim, projection_dim=spec.image_dim,
            num_hidden_layers=2, num_attention_heads=2, image_size=spec.image_size, patch_size=8,
        )
    )  # fmt: skip
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size}
    )
    vae = build_vae(spec)
    transformer = WanTransformer3DModel(
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
        rope_max_seq_len=32,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
        "vae": vae,
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=spec.flow_shift),
    }


def build_tiny_pipeline(spec: WanSpec = WanSpec()):
    """A random-weight WanImageToVideoPipeline of the real classes, shrunk."""
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(**wan_components(spec))


def make_tiny_model(directory: str | Path, spec: WanSpec = WanSpec(), dtype=torch.float32) -> Path:
    """Write the built-in model as a diffusers directory that ``load_pipeline`` reads back."""
    directory = Path(directory)
    pipe = build_tiny_pipeline(spec)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(directory, safe_serialization=True)
    (directory / "framecast_tiny.json").write_text(json.dumps(asdict(spec), indent=2))
    return directory


