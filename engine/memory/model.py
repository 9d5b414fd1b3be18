"""The memory model: what a job needs on the device and on the host, per configuration.

``MemoryModel(pipe).predict(Workload(...))`` gives the peak device bytes of a job (and the host
bytes beside it) from the pipeline's own structure, for any quantize / offload / window / size,
sampling or training, without a GPU:

- Weights are counted from the modules' parameters (the meta device will do), with the linears
  ``quantize_pipeline`` quantises at bitsandbytes' exact storage (``sizes.weight_bytes``); the
  adapter slot and the training adapter from the layers they target.
- Activations are traced (``phases``, counted by ``trace``): each phase of a job
  (text and image encoders, VAE encode, a denoising step with both guidance passes, a training
  step with its LoRA, gradient checkpointing and optimiser, the streamed VAE decode, the
  device-side SSIM) runs the engine's own step functions on the real architecture with fake
  tensors, counting live tensor bytes. The transformer is traced at two depths and two token
  counts: a step's peak grows by a fixed amount per block (nothing, when sampling; the
  checkpointed block input and the adapter's state, when training) and linearly in tokens (flash
  attention: no T x T matrix), so peaks at the real depth and any token count follow from four
  traces. The VAE's working set is traced at two sizes (affine in pixels) for clips of up to 4
  latent frames (past them its causal cache is full), its input added; SSIM's is per frame of
  one chunk.
- A phase's peak is its trace plus what is on the device meanwhile: the resident weights under
  the offload policy (none: every component; model: the component that runs; group: the
  transformer's non-block weights and two blocks, the next one prefetched), the adapters'
  device tier, the embedding caches. A job's peak is its largest phase.

Traced figures depend only on the architecture and are cached per process, so after the first
trace a plan takes microseconds. ``peak_bytes`` is the allocator's reserved memory, what a budget
must hold: the traced peak of live tensors times ``RESERVED_OVER_ALLOCATED``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field

import torch

from framecast.engine.compat import keep_in_fp32_modules
from framecast.engine.config import Offload, Optimizer, Quantize
from framecast.engine.memory import phases
from framecast.engine.memory.sizes import lora_bytes, weight_bytes
from framecast.engine.memory.trace import granules
from framecast.engine.method.windows import latent_frames

# The CUDA caching allocator's peak reserved over peak allocated memory in the two H200 rows
# of bench/results/clip.jsonl (Wan2.1-I2V-14B, 49 frames of 832x480): 54.12 / 51.31 = 1.055
# generating, 64.68 / 61.46 = 1.052 training. The one constant taken from a measurement.
RESERVED_OVER_ALLOCATED = 1.055
CACHED_EMBEDDINGS = 16  # encoding.CACHED_EMBEDDINGS: prompts and images the encoders keep, each
GROUP_BLOCKS = 2  # group offload with streams: the running block and the next one, prefetched
SSIM_CHUNK_PIXELS = 1 << 22  # metrics._SSIM_CHUNK_PIXELS


@dataclass(frozen=True)
class Workload:
    """One window of a job, as the engine would run it."""

    frames: int
    height: int
    width: int
    training: bool = False
    quantize: Quantize = Quantize.NONE
    offload: Offload = Offload.NONE
    guidance: bool = True  # classifier-free guidance: a negative prompt and a second pass per step
    rank: int = 16  # the training adapter's
    slot_rank: int = 0  # the inference slot's (0: none yet; a server has one from its first adapter on)
    gradient_checkpointing: bool = True
    optimizer: Optimizer = Optimizer.ADAMW
    vae_tiling: bool = False
    adapter_cache_bytes: int = 0  # adapters in the device tier besides the slot
    adapter_host_bytes: int = 0  # adapters in the host tier (it holds at most adapter_host_cache_gb)

    def __post_init__(self):
        for name, kind in (("quantize", Quantize), ("offload", Offload), ("optimizer", Optimizer)):
            object.__setattr__(self, name, kind(getattr(self, name)))


@dataclass(frozen=True)
class MemoryPlan:
    """A job's predicted memory: ``allocated_bytes`` is the peak of live tensors (what
    ``torch.cuda.max_memory_allocated`` reports), ``peak_bytes`` the reserved memory a budget
    must hold, ``host_bytes`` what framecast keeps in host memory meanwhile (weights off the
    device, pinned copies, adapters, the clip; not the interpreter and CUDA's own)."""

    allocated_bytes: int
    host_bytes: int
    phase: str  # where the peak falls
    weights_bytes: int  # on the device during that phase
    activation_bytes: int  # the rest of that phase's peak
    tokens: int  # the transformer's sequence length
    phases: dict[str, int] = field(default_factory=dict)  # allocated peak of each phase

    @property
    def reserved_bytes(self) -> int:
        return int(self.allocated_bytes * RESERVED_OVER_ALLOCATED)

    @property
    def peak_bytes(self) -> int:
        return self.reserved_bytes


# --- fits over traces ------------------------------------------------------------------------


def _line(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else y1


_lock = threading.Lock()
_traces: dict[tuple, dict[str, int]] = {}


def _cached(key: tuple, compute) -> dict[str, int]:
    """Traced figures per architecture and setting, once per process (traces run one at a time)."""
    with _lock:
        if key not in _traces:
            _traces[key] = compute()
        return _traces[key]


def clear_cache() -> None:
    with _lock:
        _traces.clear()


# --- the model -------------------------------------------------------------------------------


class MemoryModel:
    """The memory model of one pipeline (its modules may be real, quantised, or on the meta device)."""

    def __init__(self, pipe, compute_dtype: torch.dtype | None = None):
        self.pipe = pipe
        transformer = pipe.transformer
        self.dtype = compute_dtype or next(p.dtype for p in transformer.parameters() if p.dtype.is_floating_point)
        self.components = {
            "transformer": phases.Component.of("transformer", transformer, "num_layers", self.dtype),
            "vae": phases.Component.of("vae", pipe.vae, None, torch.float32),
        }
        for name, depth in (("text_encoder", "num_layers"), ("image_encoder", "num_hidden_layers")):
            if getattr(pipe, name, None) is not None:
                self.components[name] = phases.Component.of(name, getattr(pipe, name), depth, self.dtype)
        self.scheduler = getattr(pipe, "scheduler", None)  # the denoising trace steps one of its kind
        items = tuple(c.digest_items() for c in self.components.values())
        if self.scheduler is not None:
            config = {k: v for k, v in dict(self.scheduler.config).items() if not str(k).startswith("_")}
            items += ((type(self.scheduler).__name__, repr(sorted(config.items(), key=str))),)
        self.digest = hashlib.sha256(repr((items, str(self.dtype))).encode()).hexdigest()[:16]
        config = transformer.config
        self.layers = int(config.num_layers)
        self.patch = tuple(config.patch_size)
        self.rope = int(getattr(config, "rope_max_seq_len", 1024))
        self.text_dim = int(config.text_dim)
        image = getattr(pipe, "image_encoder", None)
        if image is not None:
            self.image_size = int(image.config.image_size)
            self.image_tokens = (self.image_size // int(image.config.patch_size)) ** 2 + 1
            self.image_dim = int(image.config.hidden_size)
        else:
            self.image_size, self.image_tokens, self.image_dim = 0, 0, int(config.image_dim or 0)
        self.vae_spatial = int(pipe.vae_scale_factor_spatial)
        self._weights: dict[Quantize, dict[str, int]] = {}

    # --- weights ------------------------------------------------------------------------------

    def weights(self, quantize: Quantize) -> dict[str, int]:
        """Device bytes of each component's weights under ``quantize`` (the transformer's blocks and
        the text encoder's linears quantised, as ``quantize_pipeline`` does), and of the transformer's
        non-block weights and largest blocks (what group offload keeps on the device)."""
        quantize = Quantize(quantize)
        if quantize not in self._weights:
            pipe, dtype = self.pipe, self.dtype
            blocks = sorted((weight_bytes(b, quantize, dtype, quantized="") for b in pipe.transformer.blocks), reverse=True)
            total = weight_bytes(pipe.transformer, quantize, dtype, quantized="blocks")
            sizes = {"transformer": total, "transformer_blocks": sum(blocks[:GROUP_BLOCKS]),
                     "transformer_rest": total - sum(blocks), "vae": weight_bytes(pipe.vae)}  # fmt: skip
            if "text_encoder" in self.components:
                text = pipe.text_encoder
                sizes["text_encoder"] = weight_bytes(text, quantize, dtype, quantized="encoder",
                                                     keep=keep_in_fp32_modules(text))  # fmt: skip
            if "image_encoder" in self.components:
                sizes["image_encoder"] = weight_bytes(pipe.image_encoder)
            self._weights[quantize] = sizes
        return self._weights[quantize]

    def slot_bytes(self, rank: int, quantize: Quantize) -> int:
        """The inference slot: every adapter target at ``rank``, in the base linears' dtype (float32
        on a quantised model, as peft makes it there)."""
        width = self.dtype.itemsize if Quantize(quantize) is Quantize.NONE else 4
        return lora_bytes(self.pipe.transformer, rank, slot=True) * width if rank else 0

    def adapter_bytes(self, rank: int) -> int:
        """A training adapter: float32 lora_A and lora_B (add_trainable makes them float32)."""
        return lora_bytes(self.pipe.transformer, rank, slot=False) * 4

    # --- traced activations ---------------------------------------------------------------------

    def _depths(self) -> tuple[int, int]:
        return (max(1, self.layers - 1), self.layers) if self.layers <= 3 else (2, 3)

    def _knots(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Two latent grids (F_lat, h, w) to trace the transformer at: 16x16 tokens per frame (the
        rotary embeddings reach ``rope`` positions per axis) and 1 or up to 64 latent frames."""
        side = min(16, self.rope)
        patch_h, patch_w = self.patch[1], self.patch[2]
        return (1, side * patch_h, side * patch_w), (min(64, self.rope), side * patch_h, side * patch_w)

    def tokens(self, frames: int, height: int, width: int) -> int:
        patch_t, patch_h, patch_w = self.patch
        h, w = height // self.vae_spatial, width // self.vae_spatial
        return -(-latent_frames(frames) // patch_t) * (h // patch_h) * (w // patch_w)

    def transformer_peaks(self, settings: phases.TransformerTrace, tokens: int) -> dict[str, float]:
        """Peak per segment of a denoising or training step at the model's depth and ``tokens``."""
        depths, knots = self._depths(), self._knots()
        def at(depth, grid):
            def run():
                return phases.trace_transformer(self.components["transformer"], settings, depth, grid,
                                               self.image_tokens, self.image_dim, scheduler=self.scheduler)  # fmt: skip

            return _cached((self.digest, "transformer", settings, depth, grid), run)

        def tokens_of(grid):
            return grid[0] * (grid[1] // self.patch[1]) * (grid[2] // self.patch[2])

        peaks = {}
        by_depth = []
        for depth in depths:
            lo, hi = at(depth, knots[0]), at(depth, knots[1])
            by_depth.append({s: _line(tokens_of(knots[0]), lo[s], tokens_of(knots[1]), hi[s], tokens)
                             for s in lo if s != "run"})  # the inputs alone: below every segment  # fmt: skip
        for segment in by_depth[0]:
            peaks[segment] = _line(depths[0], by_depth[0][segment], depths[1], by_depth[1][segment], self.layers)
        return peaks

    def _vae(self, kind: str, frames: int, height: int, width: int, tiling: bool) -> float:
        """The VAE's peak: its input (the float32 clip to encode, or the latents to decode), plus a
        working set that grows with the first latent frames (the causal cache fills) and then stays,
        however long the clip: traced at up to 13 frames (4 latent frames), at 256x256 and 128x256,
        affine in pixels. Tiled, traced at the clip's own size (its tiles do not shrink with it),
        and past 13 frames affine in frames (the tiles' outputs are all kept until blended)."""
        vae = self.components["vae"]
        z_dim, spatial = int(vae.config["z_dim"]), self.vae_spatial

        def held(f, h, w):  # the traced step's input, counted in its peak
            if kind == "encode":
                return granules(3 * f * h * w * 4)
            return granules(z_dim * latent_frames(f) * (h // spatial) * (w // spatial) * 4)

        def work(f, h, w):
            traced = _cached((self.digest, "vae", kind, tiling, f, h, w),
                             lambda: phases.trace_vae(vae, kind, f, h, w, tiling))  # fmt: skip
            return max(traced.values()) - held(f, h, w)

        first = (min(latent_frames(frames), 4) - 1) * 4 + 1
        if tiling:
            if frames <= 13:
                return held(frames, height, width) + work(frames, height, width)
            slope = (work(13, height, width) - work(9, height, width)) / 4
            return held(frames, height, width) + work(13, height, width) + slope * (frames - 13)
        big, small = work(first, 256, 256), work(first, 128, 256)
        per_pixel = (big - small) / (256 * 128)
        return held(frames, height, width) + small + per_pixel * (height * width - 128 * 256)

    def _ssim(self, frames: int, height: int, width: int) -> float:
        """``metrics.ssim`` on the device: its float64 buffers for one chunk of frames, affine in pixels
        (traced for one frame of 256x256 and 128x256) times the chunk's frames."""
        chunk = min(frames, max(1, SSIM_CHUNK_PIXELS // (height * width)))
        big, small = (_cached((self.digest, "ssim", h), lambda h=h: {"ssim": phases.trace_ssim(1, h, 256)})["ssim"]
                      for h in (256, 128))  # fmt: skip
        return chunk * (small + (big - small) / (128 * 256) * (height * width - 128 * 256))

    def _encoder(self, name: str, quantize: Quantize) -> float:
        component = self.components.get(name)
        if component is None:
            return 0.0
        quantize = quantize if name == "text_encoder" else Quantize.NONE
        depths = (max(1, component.depth - 1), component.depth) if component.depth <= 3 else (2, 3)

        def at(depth):
            if name == "text_encoder":
                return _cached((self.digest, name, quantize, depth),
                               lambda: phases.trace_text_encoder(component, quantize, depth))  # fmt: skip
            return _cached((self.digest, name, depth),
                           lambda: phases.trace_image_encoder(component, depth, self.image_size))  # fmt: skip

        lo, hi = at(depths[0]), at(depths[1])
        return _line(depths[0], max(lo.values()), depths[1], max(hi.values()), component.depth)

    # --- the plan ---------------------------------------------------------------------------------

    def predict(self, work: Workload) -> MemoryPlan:
        weights = self.weights(work.quantize)
        frames, height, width = work.frames, work.height, work.width
        tokens = self.tokens(frames, height, width)
        dtype_bytes = self.dtype.itemsize
        grid = latent_frames(frames) * (height // self.vae_spatial) * (width // self.vae_spatial)
        # Always on the device during a job: the adapters' device tier, the embedding caches (at
        # most CACHED_EMBEDDINGS of each), the window's conditioning (float32 latents, keep mask,
        # training target and loss weight).
        caches = CACHED_EMBEDDINGS * (phases.TEXT_TOKENS * self.text_dim + self.image_tokens * self.image_dim) * dtype_bytes
        job = work.adapter_cache_bytes + caches + grid * (16 + 4 + 16 + 1) * 4
        slot = self.slot_bytes(work.slot_rank, work.quantize)
        adapter = self.adapter_bytes(work.rank) if work.training else 0
        settings = phases.TransformerTrace(work.training, work.quantize, work.guidance, work.slot_rank,
                                          work.rank, work.gradient_checkpointing, work.optimizer.value)  # fmt: skip
        step = max(self.transformer_peaks(settings, tokens).values())
        activations = {
            "text_encoder": self._encoder("text_encoder", work.quantize),
            "image_encoder": self._encoder("image_encoder", work.quantize),
            "vae_encode": self._vae("encode", frames, height, width, work.vae_tiling),
            "train_step" if work.training else "denoise": step,
        }
        if not work.training:
            activations["vae_decode"] = self._vae("decode", frames, height, width, work.vae_tiling)
            activations["metrics"] = self._ssim(frames, height, width)
        resident = {name: self._resident(name, weights, slot, adapter, work.offload) for name in activations}
        peaks = {name: int(resident[name] + job + activations[name]) for name in activations}
        peak = max(peaks, key=peaks.get)
        return MemoryPlan(
            allocated_bytes=peaks[peak], host_bytes=self._host(work, weights), phase=peak,
            weights_bytes=int(resident[peak]), activation_bytes=int(peaks[peak] - resident[peak]), tokens=tokens,
            phases=peaks,
        )  # fmt: skip

    def _resident(self, phase: str, weights: dict[str, int], slot: int, adapter: int, offload: Offload) -> float:
        """Weights on the device while ``phase`` runs."""
        transformer = weights["transformer"] + slot
        if offload is Offload.GROUP:
            transformer = weights["transformer_rest"] + weights["transformer_blocks"] + slot * GROUP_BLOCKS / self.layers
        runs = {"text_encoder": "text_encoder", "image_encoder": "image_encoder", "vae_encode": "vae",
                "vae_decode": "vae", "denoise": "transformer", "train_step": "transformer"}.get(phase)  # fmt: skip
        training = adapter if phase == "train_step" else 0  # the adapter's weights; its gradients and state are traced
        if offload is Offload.NONE:
            others = sum(weights.get(name, 0) for name in ("text_encoder", "image_encoder", "vae"))
            return weights["transformer"] + slot + others + training
        if runs == "transformer":
            return transformer + training
        return weights.get(runs, 0) if runs else 0

    def _host(self, work: Workload, weights: dict[str, int]) -> int:
        """Host bytes: weights kept off the device (group offload's pinned copies rounded up to a
        power of two, as torch's pinned-memory allocator does per tensor), the adapters' host tier,
        and the clip: source, mask and output frames as uint8, the float32 clip built for the VAE."""
        clip = work.frames * work.height * work.width * (3 + 1 + 3 + 3 * 4 * (2 if work.training else 1))
        host = work.adapter_host_bytes + clip
        if work.offload is Offload.NONE:
            return host
        others = sum(weights.get(name, 0) for name in ("text_encoder", "image_encoder", "vae"))
        if work.offload is Offload.MODEL:
            return host + weights["transformer"] + others
        def pinned(nbytes: int) -> int:
            return 2 ** math.ceil(math.log2(nbytes)) if nbytes else 0

        blocks = sum(weight_bytes(block, work.quantize, self.dtype, quantized="", rounding=pinned)
                     for block in self.pipe.transformer.blocks)  # fmt: skip
        return host + others + weights["transformer_rest"] + blocks
