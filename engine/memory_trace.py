"""Tracing what a model's components hold on the device, with fake tensors on the CPU.

Each trace builds a component from its configuration (on the meta device, then as fake
tensors: no memory, no weights), runs the step the engine runs (a denoising step, a training
step, a VAE encode or decode, an encoder pass) under ``LiveBytes``, and reports the peak of
live tensor bytes the step allocated, per segment of the step. The same functions run on
real CPU tensors (``fake=False``), which is how the tests check the fake trace.

What the fake trace cannot see, and how it is handled:

- Attention. The CPU's own ``scaled_dot_product_attention`` picks a kernel by its own rules,
  and its "math" fallback materialises the [B, H, T, S] scores and probabilities. On CUDA,
  Wan's attention runs in the flash (or memory-efficient) kernel, which never does.
  ``FlashAttention`` routes every call to the CPU's flash kernel, whose tensors are the CUDA
  kernel's: the output and a float32 log-sum-exp per query, and in backward the three
  gradients.
- Buffers a CUDA kernel allocates inside itself (``kernel_workspace``): flash attention's
  backward float32 dq accumulator; bitsandbytes' int8 matmul's int32 product before its
  dequantisation; the NF4 matmul's dequantised weight (dequantise + linear, what
  bitsandbytes does on Hopper at these token counts). cuDNN's convolution workspaces (the
  VAE's) depend on the algorithm cuDNN picks at run time and are not modelled.
- Quantised linears are stand-ins (``Int8Linear``, ``NF4Linear``) holding bitsandbytes'
  storage and calling its CUDA-path autograd functions and ops (their fake kernels ship with
  bitsandbytes): the CPU build takes other paths (dequantised fp matmuls) that CUDA never runs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import weakref
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from framecast.engine.config import Quantize

GRANULE = 512  # the CUDA caching allocator rounds every block up to 512 bytes
TEXT_TOKENS = 512  # sampling.MAX_PROMPT_TOKENS: prompts are encoded padded to this length
_aten = torch.ops.aten


def granules(nbytes: int) -> int:
    return -(-int(nbytes) // GRANULE) * GRANULE


# --- counting live bytes ----------------------------------------------------------------------


def kernel_workspace(func, args) -> int:
    """Bytes a CUDA kernel allocates inside itself while it runs, which its fake (and CPU)
    kernel does not show."""
    if func is _aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        query = args[1]  # [B, H, T, D]
        b, h, t, d = query.shape
        t = -(-t // 128) * 128  # flash_api.cpp mha_bwd: dq_accum fp32 [B, T_rounded, H, D], softmax_d fp32 [B, H, T_rounded]
        return granules(b * t * h * d * 4) + granules(b * h * t * 4)
    bnb = getattr(torch.ops, "bitsandbytes", None)
    if bnb is None:
        return 0
    if func is bnb.int8_scaled_mm.default:  # int8_linear_matmul's int32 [M, N], then int8_mm_dequant
        a, b = args[0], args[1]
        return granules(math.prod(a.shape[:-1]) * b.shape[0] * 4)
    if func is bnb.gemm_4bit.default:  # dequantize_4bit to A's dtype, then F.linear
        a, shape = args[0], args[2]
        return granules(math.prod(shape) * a.element_size()) + granules(math.prod(shape) // 64 * 4)
    return 0


class LiveBytes(TorchDispatchMode):
    """Live tensor bytes over a run and their peak, per named segment of the run.

    Every storage an op creates counts, rounded up to the CUDA allocator's granule, from its
    creation until Python drops it (a weakref finalizer on the storage); views share their
    base's. The peak is taken after each op, while its inputs are still referenced, plus the
    op's own kernel workspace. ``ignore`` storages that exist before the run (weights), ``hold``
    the run's inputs (they count)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peaks: dict[str, int] = {}
        self.at_peak: dict[str, str] = {}  # the op each segment's peak came at, for reading a trace
        self.segment = "run"
        self._known = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def _see(self, storage, counted: bool = True) -> None:
        if storage in self._known:
            return
        nbytes = granules(storage.nbytes()) if counted else 0
        self._known[storage] = nbytes
        if nbytes:
            self.live += nbytes
            weakref.finalize(storage, self._free, nbytes)

    def ignore(self, tensors) -> None:
        for tensor in tensors:
            self._see(tensor.untyped_storage(), counted=False)

    def hold(self, *tensors) -> None:
        for tensor in tensors:
            if tensor is not None:
                self._see(tensor.untyped_storage())
        self._record(0)

    def mark(self, segment: str) -> None:
        """Peaks from now on go to ``segment``; it starts at what is live now."""
        self.segment = segment
        self._record(0)

    def _record(self, extra: int, func=None) -> None:
        if self.live + extra > self.peaks.get(self.segment, -1):
            self.peaks[self.segment] = self.live + extra
            self.at_peak[self.segment] = str(func)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._see(tensor.untyped_storage())
        self._record(kernel_workspace(func, args), func)
        return out


def _flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    return _aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )[0]


class FlashAttention(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` always in the CPU's flash kernel (see the module's
    docstring): no [T, S] matrix, as in CUDA's flash and memory-efficient kernels."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _flash_sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


# --- quantised stand-ins --------------------------------------------------------------------


class Int8Linear(torch.nn.Linear):
    """bitsandbytes' ``Linear8bitLt`` (has_fp16_weights=False, threshold 0) as the engine's
    ``quantize_linears`` leaves it: int8 weight and a float32 scale per output row, run through
    ``MatMul8bitLt`` as on CUDA."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.empty(self.out_features, self.in_features, dtype=torch.int8))
        self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32))
        bias = None if linear.bias is None else torch.nn.Parameter(torch.empty(self.out_features, dtype=compute_dtype),
                                                                   requires_grad=False)  # fmt: skip
        self.register_parameter("bias", bias)

    def forward(self, x):
        from bitsandbytes.autograd._functions import MatMul8bitLt, MatmulLtState

        state = MatmulLtState()
        state.has_fp16_weights, state.CB, state.SCB = False, self.weight, self.SCB
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return MatMul8bitLt.apply(x, self.weight, None, bias, state)


class NF4Linear(torch.nn.Linear):
    """bitsandbytes' ``Linear4bit`` (NF4, 64-weight blocks, double-quantised absmax, uint8
    storage) as ``quantize_linears`` leaves it, run through ``matmul_4bit`` as on CUDA."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        n = self.in_features * self.out_features
        blocks = -(-n // 64)
        self.register_buffer("weight", torch.empty(-(-n // 2), 1, dtype=torch.uint8))
        self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8))
        self.register_buffer("absmax2", torch.empty(-(-blocks // 256), dtype=torch.float32))
        self.register_buffer("code", torch.empty(16, dtype=torch.float32))
        self.register_buffer("code2", torch.empty(256, dtype=torch.float32))
        self.register_buffer("offset", torch.empty((), dtype=torch.float32))
        bias = None if linear.bias is None else torch.nn.Parameter(torch.empty(self.out_features, dtype=compute_dtype),
                                                                   requires_grad=False)  # fmt: skip
        self.register_parameter("bias", bias)

    def forward(self, x):
        import bitsandbytes as bnb
        from bitsandbytes.functional import QuantState

        nested = QuantState(absmax=self.absmax2, code=self.code2, blocksize=256, dtype=torch.float32)
        state = QuantState(absmax=self.absmax, shape=torch.Size((self.out_features, self.in_features)), code=self.code,
                           blocksize=64, quant_type="nf4", dtype=self.compute_dtype, offset=self.offset, state2=nested)  # fmt: skip
        dtype = x.dtype
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return bnb.matmul_4bit(x.to(self.compute_dtype), self.weight.t(), bias=bias, quant_state=state).to(dtype)


def quantize_stand_ins(module: torch.nn.Module, quantize: Quantize, compute_dtype, keep=frozenset()) -> None:
    """``lowvram.quantize_linears`` for a trace: every ``nn.Linear`` under ``module`` (not named in
    ``keep``) becomes its stand-in."""
    quantize = Quantize(quantize)
    if quantize is Quantize.NONE:
        return
    kind = Int8Linear if quantize is Quantize.INT8 else NF4Linear
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and name not in keep:
                setattr(parent, name, kind(child, compute_dtype))


# --- components from their configurations ----------------------------------------------------


_INDEX = re.compile(r"\.\d+\.")


def param_name(name: str) -> str:
    """A parameter's name with block indices and peft's wrapping taken out: one key per kind."""
    return _INDEX.sub(".*.", name.replace(".base_layer.", ".").replace("_orig_mod.", ""))


@dataclass(frozen=True)
class Component:
    """How to build one of a pipeline's models again, at a chosen depth, without its weights."""

    name: str
    cls: type
    config: object  # a diffusers config dict or a transformers config
    depth_key: str | None  # the config entry counting its blocks; None: built whole
    dtypes: tuple[tuple[str, torch.dtype], ...]  # param_name -> dtype, as the pipeline holds them
    default_dtype: torch.dtype

    @property
    def depth(self) -> int | None:
        if self.depth_key is None:
            return None
        config = self.config
        return int(config[self.depth_key] if isinstance(config, dict) else getattr(config, self.depth_key))

    @classmethod
    def of(cls, name: str, module: torch.nn.Module, depth_key: str | None, compute_dtype: torch.dtype) -> Component:
        config = dict(module.config) if isinstance(module.config, dict) else copy.deepcopy(module.config)
        dtypes = {}
        for pname, param in module.named_parameters():
            if "lora_" not in pname:  # adapters are added per trace
                dtypes[param_name(pname)] = param.dtype if param.dtype.is_floating_point else compute_dtype
        kinds = list(dtypes.values())
        default = max(set(kinds), key=kinds.count) if kinds else compute_dtype
        return cls(name, type(module), config, depth_key, tuple(sorted(dtypes.items())), default)

    def digest_items(self) -> tuple:
        config = self.config if isinstance(self.config, dict) else self.config.to_dict()
        keep = {k: v for k, v in config.items() if not str(k).startswith("_") and k not in ("transformers_version",
                                                                                                "architectures")}  # fmt: skip
        return (self.name, self.cls.__name__, repr(sorted(keep.items(), key=str)), repr(self.dtypes))

    def build(self, depth: int | None = None) -> torch.nn.Module:
        """The module on the meta device (at ``depth`` blocks), in the pipeline's dtypes, eval mode."""
        config = self.config
        if depth is not None:
            if isinstance(config, dict):
                config = {**config, self.depth_key: depth}
            else:
                config = copy.deepcopy(config)
                setattr(config, self.depth_key, depth)
        with torch.device("meta"):  # thread-local; the default dtype is not (a job may run meanwhile)
            module = self.cls.from_config(config) if isinstance(config, dict) else self.cls(config)
        dtypes = dict(self.dtypes)
        for pname, param in module.named_parameters():
            dtype = dtypes.get(param_name(pname), self.default_dtype)
            if param.dtype != dtype:
                param.data = param.data.to(dtype)
        return module.eval()


@contextlib.contextmanager
def materialised(fake: bool):
    """Where a trace runs: under a FakeTensorMode (``fake``) or on real CPU tensors. Yields a
    function that turns a meta module into one of that kind, in place."""
    if not fake:

        def real(module):
            module.to_empty(device="cpu")
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    if tensor.dtype.is_floating_point:
                        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
                    else:
                        tensor.zero_()
            return module

        yield real
        return
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):

        def to_fake(module):
            return module.to_empty(device="cpu")

        yield to_fake


def _random(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of normal draws from a generator of its own (the global RNG stays as it was)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def run_traced(step, weights: list[torch.nn.Module], inputs) -> dict[str, int]:
    """Peaks per segment of ``step(counter)``, the modules' tensors not counted, ``inputs`` held."""
    counter = LiveBytes()
    for module in weights:
        counter.ignore([*module.parameters(), *module.buffers()])
    with FlashAttention(), counter:
        counter.hold(*inputs)
        step(counter)
    return dict(counter.peaks)


# --- the steps the engine runs ---------------------------------------------------------------


@dataclass(frozen=True)
class TransformerTrace:
    """What a transformer trace runs: a denoising step (CFG: both passes, one after the other)
    or a training step, with the adapters the engine would have attached."""

    training: bool
    quantize: Quantize = Quantize.NONE
    guidance: bool = True
    slot_rank: int = 0  # the inference slot (TARGET_PATTERN), active while sampling; 0: none
    rank: int = 16  # the training adapter (TRAINING_PATTERN), float32, AdamW
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"


def _attach_adapters(transformer, trace: TransformerTrace) -> list[str]:
    """The peft adapters ``AdapterSlots`` attaches (on the meta module): the slot (frozen, in the
    base linears' dtype; float32 on a quantised model, as peft makes it there) and, to train, the
    training adapter in float32, the active one. Returns the trainable parameters' names."""
    from peft import LoraConfig

    from framecast.engine.adapter_formats import TARGET_PATTERN, TRAINING_PATTERN

    if trace.slot_rank:
        transformer.add_adapter(LoraConfig(r=trace.slot_rank, lora_alpha=trace.slot_rank, lora_dropout=0.0,
                                           target_modules=TARGET_PATTERN), adapter_name="_slot")  # fmt: skip
    if not trace.training:
        return []
    transformer.add_adapter(LoraConfig(r=trace.rank, lora_alpha=trace.rank, lora_dropout=0.0,
                                       target_modules=TRAINING_PATTERN), adapter_name="fc_trace")  # fmt: skip
    transformer.set_adapter("fc_trace")
    trainable = []
    for name, param in transformer.named_parameters():
        param.requires_grad_(".fc_trace." in name and "lora_" in name)
        if param.requires_grad:
            param.data = param.data.float()
            trainable.append(name)
    return trainable


def trace_transformer(component: Component, trace: TransformerTrace, depth: int, latent_grid: tuple[int, int, int],
                      image_tokens: int, image_dim: int, fake: bool = True) -> dict[str, int]:  # fmt: skip
    """Peaks of one step of the transformer at ``depth`` blocks on a latent grid (F_lat, h, w)."""
    compute_dtype = component.default_dtype
    transformer = component.build(depth)
    with torch.device("meta"):  # no memory, and peft's initialisers draw nothing from the global RNG
        quantize_stand_ins(transformer.blocks, trace.quantize, compute_dtype)
        trainable_names = _attach_adapters(transformer, trace)
    config = transformer.config
    z = config.out_channels
    text_dim = config.text_dim
    frames, height, width = latent_grid
    with materialised(fake) as make:
        transformer = make(transformer)
        params = dict(transformer.named_parameters())
        trainable = [params[name] for name in trainable_names]
        latents = _random(1, z, frames, height, width)
        keep_mask = _random(1, config.in_channels - 2 * z, frames, height, width)
        condition_latents = _random(1, z, frames, height, width)
        prompt = _random(1, TEXT_TOKENS, text_dim, dtype=compute_dtype)
        negative = _random(1, TEXT_TOKENS, text_dim, dtype=compute_dtype) if trace.guidance else None
        image = _random(1, image_tokens, image_dim, dtype=compute_dtype)
        weight = _random(1, 1, frames, height, width)
        inputs = [latents, keep_mask, condition_latents, prompt, negative, image] + ([weight] if trace.training else [])
        if trace.training:
            step, state = _train_step(transformer, trainable, trace, latents, keep_mask, condition_latents, prompt,
                                      image, weight)  # fmt: skip
            inputs += state
        else:
            step = _denoise_step(transformer, latents, keep_mask, condition_latents, prompt, negative, image)
        return run_traced(step, [transformer], inputs)


def _denoise_step(transformer, latents, keep_mask, condition_latents, prompt, negative, image):
    """``sampling.denoise``'s loop body, one step with guidance 5 as the engine runs it."""
    dtype = transformer.dtype

    def step(counter: LiveBytes):
        counter.mark("denoise")
        with torch.no_grad():
            condition = torch.cat([keep_mask.to(condition_latents), condition_latents], dim=1)
            model_input = torch.cat([latents, condition], dim=1).to(dtype)
            timestep = torch.full((1,), 500.0)

            def predict(embeds):
                return transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeds,
                                   encoder_hidden_states_image=image, return_dict=False)[0]  # fmt: skip

            velocity = predict(prompt)
            if negative is not None:
                unconditional = predict(negative)
                velocity = unconditional + 5.0 * (velocity - unconditional)
            (latents.to(torch.float32) + (-0.1) * velocity).to(velocity.dtype)  # the scheduler's Euler step

    return step


def _train_step(transformer, trainable, trace: TransformerTrace, x0, keep_mask, condition_latents, prompt, image, weight):
    """``training._train_step`` in the segments forward, backward, optimizer, with the optimiser's
    state already in place (as from the second step on). Returns (step, the state's tensors)."""
    from framecast.kernels import masked_flow_loss_from_noise

    if trace.optimizer == "adamw8bit":
        optimizer = AdamW8bit(trainable)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)  # CUDA's default for AdamW
    for param in trainable:  # one step outside the count creates the state
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim()]
    if trace.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    dtype = transformer.dtype

    def step(counter: LiveBytes):
        counter.mark("forward")
        noise = _random(*x0.shape)
        noisy = 0.5 * x0 + 0.5 * noise
        condition = torch.cat([keep_mask.to(condition_latents), condition_latents], dim=1)
        model_input = torch.cat([noisy, condition], dim=1).to(dtype)
        timestep = torch.full((1,), 500.0)
        velocity = transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=prompt,
                               encoder_hidden_states_image=image, return_dict=False)[0]  # fmt: skip
        # The PyTorch reference (CUDA runs the fused Triton kernel): latent-sized buffers either way.
        loss = masked_flow_loss_from_noise(velocity, noise, x0, weight, backend="reference")
        del velocity, model_input, noisy, condition
        counter.mark("backward")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        del loss, noise
        counter.mark("optimizer")
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()

    return step, state


class AdamW8bit:
    """bitsandbytes' ``AdamW8bit`` for a trace: its state (two uint8 moments with a float32
    absmax per 256 values; float32 moments for tensors under 4096 values) and its fused update op
    (whose fake kernel ships with bitsandbytes; the optimiser itself reads real values to build
    its quantisation maps)."""

    def __init__(self, params):
        self.params = list(params)
        self.state: dict = {}
        for param in self.params:
            if param.numel() < 4096:
                moments = [torch.zeros_like(param, dtype=torch.float32) for _ in range(2)]
                self.state[param] = {"state1": moments[0], "state2": moments[1]}
                continue
            blocks = -(-param.numel() // 256)
            self.state[param] = {
                "state1": torch.zeros_like(param, dtype=torch.uint8), "state2": torch.zeros_like(param, dtype=torch.uint8),
                "absmax1": torch.zeros(blocks), "absmax2": torch.zeros(blocks),
            }  # fmt: skip
        self.qmap1, self.qmap2 = torch.zeros(256), torch.zeros(256)  # shared by every tensor

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        ops = torch.ops.bitsandbytes
        for param in self.params:
            s = self.state[param]
            if "absmax1" in s:
                ops.optimizer_update_8bit_blockwise("adam", param.grad, param, s["state1"], s["state2"], 0.9, 0.999, 0.0,
                                                    0.0, 1e-8, 1, 1e-4, self.qmap1, self.qmap2, s["absmax1"],
                                                    s["absmax2"], 0.01, 1.0, False)  # fmt: skip
            else:
                ops.optimizer_update_32bit("adam", param.grad, param, s["state1"], s["state2"], None, 0.0, 0.0, 0.9,
                                           0.999, 0.0, 0.0, 1e-8, 0.01, 1, 1e-4, 1.0, False)  # fmt: skip


def trace_vae(component: Component, kind: str, frames: int, height: int, width: int, tiling: bool = False,
              fake: bool = True) -> dict[str, int]:  # fmt: skip
    """Peaks of the VAE encoding a [1, 3, frames, height, width] clip (``sampling.encode_video``) or
    decoding its latents as ``sampling.decode_stream`` does (streamed per latent frame; whole and
    tiled with ``tiling``), the uint8 frames handed to the host."""
    from framecast.engine.compat import decode_latent_frames, vae_streams
    from framecast.engine.sampling import encode_video
    from framecast.engine.windows import latent_frames

    vae = component.build()
    if tiling:
        vae.enable_tiling()
    spatial = getattr(vae.config, "scale_factor_spatial", None) or 2 ** (len(vae.config.dim_mult) - 1)
    with materialised(fake) as make:
        vae = make(vae)
        if kind == "encode":
            video = _random(1, 3, frames, height, width)

            def encode(counter):
                counter.mark("vae_encode")
                encode_video(SimpleNamespace(vae=vae), video)

            return run_traced(encode, [vae], [video])
        latents = _random(1, vae.config.z_dim, latent_frames(frames), height // spatial, width // spatial)

        def decode(counter):
            counter.mark("vae_decode")
            with torch.no_grad():
                mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
                std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
                z = (latents.to(torch.float32) * std + mean).to(vae.dtype)
                chunks = decode_latent_frames(vae, z) if vae_streams(vae) else [vae.decode(z, return_dict=False)[0]]
                for chunk in chunks:  # conditioning.to_uint8, up to its copy to the host
                    frames = (chunk[0].float() / 2 + 0.5).clamp(0, 1)
                    (frames.movedim(-4, -1) * 255).round().to(torch.uint8)
                    del chunk, frames

        return run_traced(decode, [vae], [latents])


def trace_text_encoder(component: Component, quantize: Quantize, depth: int, fake: bool = True) -> dict[str, int]:
    """Peak of ``sampling.encode_prompt_ids``: the text encoder over a padded prompt (the engine
    quantises its encoder's linears with the transformer's, the full-precision ones kept)."""
    from framecast.engine.compat import keep_in_fp32_modules
    from framecast.engine.sampling import encode_prompt_ids

    encoder = component.build(depth)
    if hasattr(encoder, "encoder"):
        with torch.device("meta"):
            quantize_stand_ins(encoder.encoder, quantize, component.default_dtype, keep_in_fp32_modules(encoder))
    with materialised(fake) as make:
        encoder = make(encoder)
        pipe = SimpleNamespace(text_encoder=encoder, tokenizer=SimpleNamespace(pad_token_id=0),
                               transformer=SimpleNamespace(dtype=component.default_dtype))  # fmt: skip

        def encode(counter):
            counter.mark("text_encoder")
            encode_prompt_ids(pipe, (1,) * 8, "cpu")

        return run_traced(encode, [encoder], [])


def trace_image_encoder(component: Component, depth: int, image_size: int, fake: bool = True) -> dict[str, int]:
    """Peak of ``WanImageToVideoPipeline.encode_image``: the CLIP vision model on one processed
    image, every hidden state kept (the pipeline takes the penultimate)."""
    encoder = component.build(depth)
    with materialised(fake) as make:
        encoder = make(encoder)
        pixels = _random(1, 3, image_size, image_size)

        def encode(counter):
            counter.mark("image_encoder")
            with torch.no_grad():
                encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].to(component.default_dtype)

        return run_traced(encode, [encoder], [pixels])


def trace_ssim(frames: int, height: int, width: int) -> int:
    """Peak device bytes of ``metrics.ssim`` over ``frames`` frames (one chunk), traced on real
    CPU tensors: on a GPU the two uint8 chunks it copies to the device add 2 x 3 bytes a pixel."""
    import numpy as np

    from framecast.engine.metrics import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    where = np.ones((frames, height, width), dtype=bool)
    counter = LiveBytes()
    with counter:
        ssim(a, b, where, device="cpu")
    return max(counter.peaks.values()) + 2 * granules(frames * height * width * 3)
