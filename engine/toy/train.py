"""Training the toy model (``model``; its sizes: ``preset("toy")``) on a CPU, from a seed, in two stages.

Stage A, the VAE: ``AutoencoderKLWan`` learns to reconstruct toy-world frames and clips (and
the grey condition videos made from them) through its causal chunked encode/decode, with
L1 + MSE, a small KL term, and a term pulling three latent channels toward the mean colour of
the pixels they encode (it gets training moving: see ``vae_align_weight``). Its latents'
per-channel mean and std then become the VAE config's ``latents_mean``/``latents_std``, so
normalised latents are near zero-mean, unit-variance.

Stage B, the transformer: with the VAE frozen, ``WanTransformer3DModel`` learns flow matching
under exactly the conditioning the method feeds it at sampling time: half the samples plain
I2V (first frame + grey frames, mask frames 1.. = 0), half the method's spatiotemporal mask
(greyed source frames, ``latent_keep_mask``), on clips of 17, 13, 9 and 5 frames and single
greyed frames (the appearance phase's form). Prompts are dropped 10% of the time so guidance
has an unconditional model to push against. The saved transformer is an EMA of its weights.

A run may start from an earlier toy model instead of from scratch (``init_from``): its weights
are copied in, and where ``spec`` gives the VAE more latent channels than it had, the new
channels start out unused (``widen_latent_channels``), so training begins at the earlier
model's quality and only has to learn what the new channels add. Such a run may also train the
VAE decoder alone (``decoder_steps``; a decoder of another width starts from scratch): the
frozen encoder's latents do not change, so the transformer trained on them stays valid and a
better decoder sharpens whatever it generates.

Both stages checkpoint every few minutes into ``OUT/checkpoints`` and resume from there; a
stage's data and noise depend only on (seed, step), so a resumed run draws what an
uninterrupted one would. Losses go to ``OUT/train_log.jsonl``.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from framecast.engine.errors import InvalidInput
from framecast.engine.method import conditioning as C
from framecast.engine.quality.metrics import psnr
from framecast.engine.toy.architectures import PRESETS, WanSpec, build_components, build_vae
from framecast.engine.toy.model import (
    VALIDATION_SCENE_SEEDS,
    LatentSet,
    random_edit_mask,
    random_scene,
    vae_training_clip,
)
from framecast.engine.toy.world import SceneConfig, make_scene

log = logging.getLogger(__name__)

_VAE_STAGE, _LATENT_STAGE, _TRANSFORMER_STAGE, _DECODER_STAGE = 1, 2, 3, 4  # mixed into rng seeds
_VAE_SHARE_OF_CAP = 0.4  # with max_minutes, the VAE stops at 40% of it, the transformer at 100%


@dataclass(frozen=True)
class ToyTrainSettings:
    seed: int = 0
    # stage A
    vae_steps: int = 2000  # even steps: a batch of single frames; odd steps: video clips
    vae_image_batch: int = 8
    vae_clip_batch: int = 1
    vae_clip_frames: int = 9
    vae_lr: float = 1e-3
    # then a fine-tune on whole 17-frame clips (the later causal chunks) with the edit target's
    # pixels weighted up: sprites are what the benchmark scores, and a plain loss spends the
    # VAE's capacity on the background that fills most pixels
    vae_finetune_steps: int = 1000
    vae_finetune_lr: float = 5e-4
    vae_target_weight: float = 4.0  # extra loss weight on the edit target's pixels, fine-tune only
    vae_kl_weight: float = 1e-6
    # Latent channels 0-2 are pulled toward the mean colour of the pixels they encode: without
    # it the encoder's latents barely differ between inputs for hundreds of steps (its output
    # RMS norm keeps only the direction of features that all point alike at first).
    vae_align_weight: float = 1.0
    # then, optionally, the decoder alone on the frozen encoder's latents (a decoder of another
    # width than the encoder's, ``WanSpec.vae_decoder_base_dim``, starts here from scratch):
    # the latents do not change, so a transformer trained on them stays valid
    decoder_steps: int = 0  # even steps: a batch of single frames; odd steps: clips (every other one 17 frames)
    decoder_lr: float = 1e-3
    # latents for stage B
    latent_scenes: int = 600  # each gives a source and an edited video sample
    # stage B
    transformer_steps: int = 2500
    transformer_batch: int = 16
    transformer_lr: float = 5e-4
    plain_i2v_share: float = 0.5
    prompt_dropout: float = 0.1
    ema_decay: float = 0.998
    warmup_steps: int = 50
    checkpoint_every_s: float = 120.0
    # wall-clock cap (the VAE and decoder stop at 40% of it), along which the decoder's and the
    # transformer's learning rates anneal where it comes before their last step; None: every step runs
    max_minutes: float | None = None
    data_workers: int = 0  # processes drawing the VAE stages' batches ahead (0: drawn in the training loop)
    threads: int = 1  # one thread: two threads on two shared cores stall whenever another process runs
    device: str = "cpu"  # or "cuda": every draw stays on the CPU, so a run's data is the same on both


def _lr_factor(step: int, total: int, warmup: int, clock: float = 0.0) -> float:
    """Linear warmup, then cosine down to 10%, along the steps or, where it is further on, the
    share ``clock`` of the stage's wall-clock time already spent (so a capped run still anneals)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = max(clock, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _Run:
    """Log lines, checkpoints and the wall-clock cap shared by the stages."""

    def __init__(self, out_dir: Path, settings: ToyTrainSettings):
        self.out_dir = out_dir
        self.checkpoints = out_dir / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.started = time.monotonic()
        self.log_path = out_dir / "train_log.jsonl"

    def log(self, **row) -> None:
        row = {"elapsed_s": round(time.monotonic() - self.started, 1), **row}
        with self.log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s", row)

    def out_of_time(self, share: float = 1.0) -> bool:
        """Past ``share`` of the wall-clock cap (no cap: never)."""
        cap = self.settings.max_minutes
        return cap is not None and time.monotonic() - self.started > share * cap * 60

    def clock(self, since: float, share: float = 1.0) -> float:
        """The share of the time from ``since`` (a ``time.monotonic()``) to the stage's cap
        (``share`` of the run's) already spent; 0 without a cap."""
        cap = self.settings.max_minutes
        if cap is None:
            return 0.0
        return (time.monotonic() - since) / max(1e-9, self.started + share * cap * 60 - since)

    def save(self, name: str, state: dict) -> None:
        path = self.checkpoints / f"{name}.pt"
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def load(self, name: str) -> dict | None:
        path = self.checkpoints / f"{name}.pt"
        return torch.load(path, weights_only=False) if path.is_file() else None


# --- stage A: the VAE ---------------------------------------------------------------------------


def _to_unit(clips: np.ndarray) -> torch.Tensor:
    """[B, F, H, W, 3] uint8 -> [B, 3, F, H, W] float32 in [-1, 1]."""
    return C.unit_range(clips).permute(0, 4, 1, 2, 3).contiguous()


def _pooled_colour(x: torch.Tensor, spatial: int = C.VAE_SPATIAL) -> torch.Tensor:
    """The mean colour of the pixels each latent cell encodes: [B, 3, F, H, W] -> [B, 3, F_lat, H/s, W/s]
    for a VAE that shrinks space ``spatial`` (s) times.
    Latent frame 0 covers pixel frame 0, latent frame j >= 1 pixel frames 4j-3 .. 4j."""
    batch, channels, frames, height, width = x.shape
    later = x[:, :, 1:].reshape(batch, channels, (frames - 1) // C.VAE_TEMPORAL, C.VAE_TEMPORAL, height, width)
    per_latent_frame = torch.cat([x[:, :, :1], later.mean(dim=3)], dim=2)
    return torch.nn.functional.avg_pool3d(per_latent_frame, (1, spatial, spatial))


def _vae_draw(stage: int, spec: WanSpec, settings: ToyTrainSettings, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s batch of VAE stage ``stage`` (a function of the seed, stage and step only):
    even steps a batch of single frames (they teach the spatial code fast: every layer but the
    temporal ones sees them), odd steps short clips, or whole ones in the fine-tune and on every
    other odd step of the decoder stage (the later causal 4-frame chunks).
    -> (clips [B, F, H, W, 3] uint8, the edit target's pixels [B, F, H, W] bool)."""
    rng = np.random.default_rng([settings.seed, stage, step])
    short_clips = min(settings.vae_clip_frames, spec.frames)
    if stage == _DECODER_STAGE:
        clip_frames = spec.frames if step % 4 == 3 else short_clips
    else:
        clip_frames = spec.frames if step >= settings.vae_steps else short_clips
    frames, batch = (1, settings.vae_image_batch) if step % 2 == 0 else (clip_frames, settings.vae_clip_batch)
    clips, targets = zip(*[vae_training_clip(rng, spec, frames) for _ in range(batch)])
    return np.stack(clips), np.stack(targets)


def _vae_draws(stage: int, spec: WanSpec, settings: ToyTrainSettings, steps: range):
    """``_vae_draw`` of every step in ``steps``, in order; with ``settings.data_workers``, drawn
    ahead in that many processes (a few batches at most), so a GPU does not wait on the CPU.
    Yields (step, pixels in [-1, 1] [B, 3, F, H, W], the fine-tune's loss weight map: edit target up)."""
    draw = functools.partial(_vae_draw, stage, spec, settings)
    for step, (clips, targets) in zip(steps, _prefetched(draw, steps, settings.data_workers)):
        yield step, _to_unit(clips), 1.0 + settings.vae_target_weight * torch.from_numpy(targets).float()[:, None]


def _prefetched(draw, steps: range, workers: int, ahead: int = 4):
    """``map(draw, steps)``, computed up to ``ahead * workers`` items ahead in worker processes."""
    if workers == 0:
        yield from map(draw, steps)
        return
    # forkserver, not fork: the caller may hold threads (a server, tqdm's monitor), and a forked child
    # inherits every lock one of them held at the fork, held forever.
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        upcoming = iter(steps)
        pending = collections.deque(pool.apply_async(draw, (step,)) for step in itertools.islice(upcoming, ahead * workers))
        while pending:
            item = pending.popleft().get()
            step = next(upcoming, None)
            if step is not None:
                pending.append(pool.apply_async(draw, (step,)))
            yield item


def _reconstruction_losses(error: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted L1 and MSE of a reconstruction error."""
    return (error.abs() * weight).mean() / weight.mean(), (error.pow(2) * weight).mean() / weight.mean()


class _VaeStage:
    """The log lines, validation and checkpoints a VAE stage ("vae" or "decoder") writes as it steps."""

    def __init__(self, name: str, vae, optimizer, spec: WanSpec, settings: ToyTrainSettings, run: _Run):
        self.name, self.vae, self.optimizer, self.settings, self.run = name, vae, optimizer, settings, run
        self.validation = _validation_videos(spec)
        self.last_save = time.monotonic()

    def stepped(self, step: int, **losses: torch.Tensor) -> None:
        if step % 25 == 0:
            self.run.log(stage=self.name, step=step, **{k: v.item() for k, v in losses.items()})
        if step % 200 == 0 and step:
            self.run.log(stage=self.name, step=step, val_psnr=_vae_psnr(self.vae, self.validation))
            self.vae.train()
        if time.monotonic() - self.last_save > self.settings.checkpoint_every_s:
            self.save(step + 1)
            self.last_save = time.monotonic()

    def finish(self, done: int, total: int) -> None:
        self.vae.eval()
        self.run.log(stage=self.name, step=done, val_psnr=_vae_psnr(self.vae, self.validation), done=done >= total)
        self.save(done)

    def save(self, step: int) -> None:
        state = {"model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step}
        self.run.save(self.name, state)


def train_vae(vae, spec: WanSpec, settings: ToyTrainSettings, run: _Run) -> None:
    total = settings.vae_steps + settings.vae_finetune_steps
    if not total:  # kept as built or started from
        return
    state = run.load("vae")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if start >= total:
            return
    else:
        # Start the posterior narrow (std e^-5): at the default logvar 0 its noise drowns the
        # small initial means and the decoder learns nothing but the mean colour.
        with torch.no_grad():
            vae.quant_conv.bias[vae.config.z_dim :] = -10.0
    stage = _VaeStage("vae", vae, optimizer, spec, settings, run)
    vae.train()
    done = start
    for step, x, weight in _vae_draws(_VAE_STAGE, spec, settings, range(start, total)):
        if run.out_of_time(_VAE_SHARE_OF_CAP):
            break
        finetune = step >= settings.vae_steps
        x, weight = x.to(vae.device), weight.to(vae.device)
        if finetune:
            lr = settings.vae_finetune_lr * _lr_factor(step - settings.vae_steps, settings.vae_finetune_steps, 0)
        else:
            lr = settings.vae_lr * _lr_factor(step, settings.vae_steps, settings.warmup_steps)
            weight = torch.ones(1, device=vae.device)
        for group in optimizer.param_groups:
            group["lr"] = lr
        posterior = vae.encode(x).latent_dist
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        l1, mse = _reconstruction_losses(vae.decode(posterior.sample(generator)).sample - x, weight)
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()  # per latent value
        align = (posterior.mean[:, :3] - _pooled_colour(x, vae.config.scale_factor_spatial)).pow(2).mean()
        loss = l1 + mse + settings.vae_kl_weight * kl + settings.vae_align_weight * align
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        stage.stepped(step, l1=l1, mse=mse, kl=kl, align=align)
    stage.finish(done, total)


def train_decoder(vae, spec: WanSpec, settings: ToyTrainSettings, run: _Run) -> None:
    """Train the decoder (and ``post_quant_conv``) on the frozen encoder's latents, with the
    fine-tune's loss: L1 + MSE, the edit target's pixels weighted up."""
    decoding = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    optimizer = torch.optim.AdamW(decoding, lr=settings.decoder_lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    state = run.load("decoder")
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if start >= settings.decoder_steps:
            return
    stage = _VaeStage("decoder", vae, optimizer, spec, settings, run)
    vae.requires_grad_(False)
    for param in decoding:
        param.requires_grad_(True)
    vae.train()
    done = start
    since = time.monotonic()
    for step, x, weight in _vae_draws(_DECODER_STAGE, spec, settings, range(start, settings.decoder_steps)):
        if run.out_of_time(_VAE_SHARE_OF_CAP):
            break
        x, weight = x.to(vae.device), weight.to(vae.device)
        clock = run.clock(since, _VAE_SHARE_OF_CAP)
        for group in optimizer.param_groups:
            group["lr"] = settings.decoder_lr * _lr_factor(step, settings.decoder_steps, settings.warmup_steps, clock)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
            latents = vae.encode(x).latent_dist.sample(generator)
        l1, mse = _reconstruction_losses(vae.decode(latents).sample - x, weight)
        optimizer.zero_grad(set_to_none=True)
        (l1 + mse).backward()
        torch.nn.utils.clip_grad_norm_(decoding, 1.0)
        optimizer.step()
        done = step + 1
        stage.stepped(step, l1=l1, mse=mse)
    stage.finish(done, settings.decoder_steps)
    vae.requires_grad_(False)


def _validation_videos(spec: WanSpec, count: int = 6) -> np.ndarray:
    config = SceneConfig(frames=spec.frames, height=spec.height, width=spec.width, sprites=2)
    return np.stack([make_scene(VALIDATION_SCENE_SEEDS[i], config).source for i in range(count)])


@torch.no_grad()
def _vae_psnr(vae, videos: np.ndarray) -> float:
    """Mean PSNR (dB) of decode(encode(x).mode()) over [B, F, H, W, 3] uint8 videos."""
    vae.eval()
    recon = vae.decode(vae.encode(_to_unit(videos).to(vae.device)).latent_dist.mode()).sample
    recon = C.to_uint8(recon)
    return float(np.mean([psnr(r, v) for r, v in zip(recon, videos)]))


@torch.no_grad()
def set_latent_statistics(vae, spec: WanSpec, settings: ToyTrainSettings, clips: int = 64) -> None:
    """Measure the per-channel mean/std of the VAE's latents (the mode) on training clips and
    write them into the VAE config, which the pipeline and the engine normalise with."""
    rng = np.random.default_rng([settings.seed, _VAE_STAGE, 2**31])  # apart from every step's draw
    videos = np.stack([vae_training_clip(rng, spec, spec.frames)[0] for _ in range(clips)])
    latents = torch.cat([vae.encode(_to_unit(videos[i : i + 8]).to(vae.device)).latent_dist.mode() for i in range(0, clips, 8)])
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean], latents_std=[round(float(v), 5) for v in std])


# --- starting from an earlier model ------------------------------------------------------------


def _latent_index(old_z: int, new_z: int, kind: str) -> torch.Tensor:
    """Where each of an old tensor dimension's entries goes in the widened one.

    kind "z": latent channels; "moments": the encoder's [mean, log-variance] halves;
    "transformer_in": the transformer's input [noisy latents, 4 mask channels, condition latents];
    "transformer_out": ``proj_out``'s features, one per (2x2 patch position, channel), channel fastest."""
    old = torch.arange({"z": old_z, "moments": 2 * old_z, "transformer_in": 2 * old_z + C.VAE_TEMPORAL}.get(kind, 4 * old_z))
    if kind == "z":
        return old
    if kind == "transformer_out":
        return old // old_z * new_z + old % old_z
    return torch.where(old < old_z, old, old + new_z - old_z)  # the second half (and the mask) shifts as one block


# Tensors whose shape depends on the latent width: name -> the kind of each dimension that does.
_WIDENED = {
    "vae": {
        "encoder.conv_out.weight": ("moments", None), "encoder.conv_out.bias": ("moments",),
        "quant_conv.weight": ("moments", "moments"), "quant_conv.bias": ("moments",),
        "post_quant_conv.weight": ("z", "z"), "post_quant_conv.bias": ("z",),
        "decoder.conv_in.weight": (None, "z"),
    },
    "transformer": {
        "patch_embedding.weight": (None, "transformer_in"),
        "proj_out.weight": ("transformer_out", None), "proj_out.bias": ("transformer_out",),
    },
}  # fmt: skip


def model_origin(model_dir: str | Path) -> dict:
    """What a run that starts from ``model_dir`` records of it: its name, a digest of its weights
    and how it was trained (its ``framecast_toy.json``), so the chain of runs can be traced."""
    about = Path(model_dir) / "framecast_toy.json"
    origin = {"dir": Path(model_dir).name, "weights_sha256": _weights_digest(model_dir)}
    if about.is_file():
        origin["trained"] = json.loads(about.read_text())
    return origin


def _weights_digest(model_dir: str | Path) -> str:
    """sha256 over the directory's weight files, in path order: which model a run started from."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*/*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def widen_latent_channels(old: dict, new: dict) -> None:
    """Copy the trained components ``old`` into the freshly built ``new`` (same sizes, except
    possibly more VAE latent channels). New latent channels start out unused: the decoder and the
    transformer read them with zero weights and the transformer predicts zero for them, while the
    encoder writes fresh features into them (passed through unchanged by the 1x1 convolutions)
    with a narrow posterior, so the widened model decodes and denoises exactly as the old one.
    A VAE of other levels (``vae_dim_mult``, base width, ...) is not copied: it starts fresh,
    and everything else starts from ``old``."""
    old_z, new_z = old["vae"].config.z_dim, new["vae"].config.z_dim
    if new_z < old_z:
        raise ValueError(f"cannot narrow the latents from {old_z} to {new_z} channels")
    new_vae = _vae_levels(old["vae"].config) != _vae_levels(new["vae"].config)
    if new_vae and new_z != old_z:
        raise ValueError("a VAE of new levels starts from scratch, so its latent channels cannot be widened too")
    new_decoder = _decoder_width(old["vae"].config) != _decoder_width(new["vae"].config)
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        if new_vae and name == "vae":
            continue  # a VAE of other levels starts fresh (its stage must train it: ``vae_steps``)
        source, target = old[name].state_dict(), new[name].state_dict()
        for key, value in target.items():
            if new_decoder and name == "vae" and key.startswith("decoder."):
                continue  # a decoder of another width starts fresh (``train_decoder``)
            kinds = _WIDENED.get(name, {}).get(key)
            if kinds is None:
                value.copy_(source[key])
                continue
            fresh = value.clone()
            value.zero_()
            if key == "encoder.conv_out.weight" or key == "encoder.conv_out.bias":
                value[old_z:new_z] = fresh[old_z:new_z]  # new means: fresh features
            elif key in ("quant_conv.weight", "post_quant_conv.weight"):
                for channel in range(old_z, new_z):
                    value[channel, channel] = 1.0
            elif key == "quant_conv.bias":
                value[new_z + old_z :] = -10.0  # the new channels' log-variance: a narrow posterior
            index = [torch.arange(size) if kind is None else _latent_index(old_z, new_z, kind)
                     for kind, size in zip(kinds, source[key].shape)]  # fmt: skip
            if len(index) == 2:
                index = [index[0][:, None], index[1][None, :]]
            value[tuple(index)] = source[key].to(value.dtype)
    if new_vae:
        return
    latents_mean = list(old["vae"].config.latents_mean) + [0.0] * (new_z - old_z)
    latents_std = list(old["vae"].config.latents_std) + [1.0] * (new_z - old_z)
    new["vae"].register_to_config(latents_mean=latents_mean, latents_std=latents_std)


def _vae_levels(config) -> tuple:
    """What fixes the VAE's tensors other than its latent and decoder widths (from its config)."""
    return (config["base_dim"], tuple(config["dim_mult"]), config["num_res_blocks"], config["is_residual"],
            tuple(config["temperal_downsample"]))  # fmt: skip


def _decoder_width(config) -> int:
    return config.get("decoder_base_dim") or config["base_dim"]


def check_schedule(settings: ToyTrainSettings, spec: WanSpec, init_from: str | Path | None) -> None:
    """Refuse a run from ``init_from`` that would leave a part of the model untrained: a VAE of
    other levels than ``init_from``'s starts from scratch and needs ``vae_steps``, a decoder of
    another width needs some VAE or ``decoder_steps``. Reads configs only."""
    if init_from is None:
        return
    from diffusers import AutoencoderKLWan

    old = AutoencoderKLWan.load_config(Path(init_from) / "vae")
    new = build_vae(spec).config
    same_levels = _vae_levels(old) == _vae_levels(new)
    if not same_levels and settings.vae_steps == 0:
        raise InvalidInput("vae_steps", settings.vae_steps,
                           f"must be > 0: a VAE of other levels (dim_mult {list(new['dim_mult'])}) than the one "
                           f"started from ({list(old['dim_mult'])}) starts from scratch")  # fmt: skip
    old_decoder, new_decoder = _decoder_width(old), _decoder_width(new)
    vae_trains = settings.vae_steps + settings.vae_finetune_steps + settings.decoder_steps
    if same_levels and old_decoder != new_decoder and not vae_trains:
        raise InvalidInput("decoder_steps", settings.decoder_steps,
                           f"must be > 0: a decoder of width {new_decoder} (the one started from has "
                           f"{old_decoder}) starts from scratch")  # fmt: skip


# --- the whole run ---------------------------------------------------------------------------------


def train_toy_model(
    out_dir: str | Path,
    settings: ToyTrainSettings = ToyTrainSettings(),
    spec: WanSpec = PRESETS["toy"],
    stop_after: str | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train the toy model into ``out_dir`` (a diffusers directory, fp16) and return it.

    Resumes from ``out_dir/checkpoints``. ``stop_after="vae"`` ends after stage A.
    ``init_from``: a toy model directory to start from (widened to ``spec``'s latent channels).
    """
    check_schedule(settings, spec, init_from)
    torch.set_num_threads(settings.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(out_dir, settings)
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    components = build_components(spec)
    origin = None
    if init_from is not None:
        from framecast.engine.model import load_pipeline

        origin = model_origin(init_from)
        widen_latent_channels(load_pipeline(init_from).components, components)
    run.log(stage="start", settings=asdict(settings), spec=asdict(spec), init_from=origin)
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        components[name].to(device)
    vae = components["vae"]
    train_vae(vae, spec, settings, run)
    if settings.decoder_steps:
        train_decoder(vae, spec, settings, run)
    vae.eval().requires_grad_(False)
    if init_from is None or settings.vae_steps + settings.vae_finetune_steps:  # else the encoder is the one started from
        set_latent_statistics(vae, spec, settings)
    run.log(stage="vae", latents_mean=vae.config.latents_mean, latents_std=vae.config.latents_std)
    if stop_after == "vae":
        return out_dir
    from framecast.engine.compat import use_pil_clip_processor

    use_pil_clip_processor()  # before diffusers' Wan pipeline module imports the name
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(**components)
    if settings.transformer_steps:  # none: the transformer stays as built or started from
        latents = build_latent_set(pipe, spec, settings, run)
        train_transformer(pipe.transformer, latents, spec, settings, run)
    return save_model(pipe, spec, settings, out_dir, origin)


# --- latents for stage B ----------------------------------------------------------------------------


@torch.no_grad()
def build_latent_set(pipe, spec: WanSpec, settings: ToyTrainSettings, run: _Run, chunk: int = 8) -> LatentSet:
    """Encode ``latent_scenes`` toy-world scenes (source and edited video of each) into the
    transformer's training samples, with the engine's own encoders. Cached in the checkpoints."""
    from framecast.engine.method.sampling import encode_clip_image, encode_prompts, encode_video

    cached = run.load("latents")
    if cached is not None:
        return LatentSet(**cached)
    started = time.monotonic()
    device = pipe.vae.device
    prompts: dict[str, torch.Tensor] = {}

    def prompt_embeds(text: str) -> torch.Tensor:
        if text not in prompts:
            prompts[text] = encode_prompts(pipe, text, None, device)[0][0].half().cpu()
        return prompts[text]

    every_frame = np.ones((spec.frames, spec.height, spec.width), dtype=bool)
    spatial = pipe.vae_scale_factor_spatial
    columns: dict[str, list[torch.Tensor]] = {name: [] for name in LatentSet.__dataclass_fields__ if name != "empty_prompt"}
    pending: list[tuple] = []

    def flush() -> None:
        if not pending:
            return
        videos, plains, maskeds, frames, frame_conds = (torch.cat(parts) for parts in zip(*[p[:5] for p in pending]))
        for name, clips in (("target", videos), ("plain_condition", plains), ("masked_condition", maskeds),
                            ("frame_target", frames), ("frame_condition", frame_conds)):  # fmt: skip
            columns[name].append(encode_video(pipe, clips).cpu())  # the set stays on the CPU
        pending.clear()

    for index in range(settings.latent_scenes):
        rng = np.random.default_rng([settings.seed, _LATENT_STAGE, index])
        scene = random_scene(rng, spec)
        for video, prompt in ((scene.source, scene.prompt), (scene.edited, scene.edited_prompt)):
            edit_mask = random_edit_mask(rng, scene)
            frame = int(rng.integers(1, spec.frames))
            pending.append((
                C.to_unit_range(video),
                C.condition_video(video[0], video, every_frame),
                C.condition_video(video[0], video, edit_mask),
                C.to_unit_range(video[frame : frame + 1]),
                C.condition_video(None, video[frame : frame + 1], edit_mask[frame : frame + 1]),
            ))  # fmt: skip
            columns["masked_keep"].append(C.latent_keep_mask(edit_mask, spatial=spatial))
            columns["frame_keep"].append(C.latent_keep_mask(edit_mask[frame : frame + 1], False, spatial))
            columns["prompt"].append(prompt_embeds(prompt)[None])
            columns["image"].append(encode_clip_image(pipe, video[0], device).cpu())
            columns["frame_image"].append(encode_clip_image(pipe, video[frame], device).cpu())
        if len(pending) >= chunk:
            flush()
        if index % 50 == 0:
            run.log(stage="latents", scenes=index, elapsed_s_stage=round(time.monotonic() - started, 1))
    flush()
    tensors = {name: torch.cat(parts) for name, parts in columns.items()}
    tensors["empty_prompt"] = prompt_embeds("")
    run.save("latents", tensors)
    run.log(stage="latents", samples=int(tensors["target"].shape[0]), seconds=round(time.monotonic() - started, 1))
    return LatentSet(**tensors)


# --- stage B: the transformer ---------------------------------------------------------------------

# Latent frames per training clip (17, 13, 9, 5 pixel frames) and how often each is drawn;
# 1 = a single greyed frame, the appearance phase's sample.
_CLIP_LATENT_FRAMES = (5, 4, 3, 2, 1)
_CLIP_SHARES = (0.5, 0.12, 0.18, 0.1, 0.1)


def _draw_batch(latents: LatentSet, rows: np.ndarray, rng: np.random.Generator, settings: ToyTrainSettings):
    """One step's samples: a clip length for the whole batch, a conditioning per sample."""
    latent_frames = int(rng.choice(_CLIP_LATENT_FRAMES, p=_CLIP_SHARES))
    plain = rng.random(len(rows)) < settings.plain_i2v_share
    dropped = rng.random(len(rows)) < settings.prompt_dropout
    return _batch(latents, rows, latent_frames, plain, dropped)


def _batch(latents: LatentSet, rows: np.ndarray, latent_frames: int, plain: np.ndarray, dropped: np.ndarray):
    """(x0, condition [B, 4 + 16, F_lat, h, w], prompt, image). ``plain``: per sample, plain I2V
    conditioning instead of the method's; ``dropped``: per sample, the empty prompt."""
    index = torch.from_numpy(rows)
    if latent_frames == 1:
        x0 = latents.frame_target[index]
        condition = torch.cat([latents.frame_keep[index], latents.frame_condition[index]], dim=1)
        image = latents.frame_image[index]
    else:
        x0 = latents.target[index, :, :latent_frames]
        use_plain = torch.from_numpy(plain).view(-1, 1, 1, 1, 1)
        masked_keep = latents.masked_keep[index, :, :latent_frames]
        plain_keep = torch.zeros_like(masked_keep)
        plain_keep[:, :, 0] = 1.0
        keep = torch.where(use_plain, plain_keep, masked_keep)
        condition_latents = torch.where(
            use_plain, latents.plain_condition[index, :, :latent_frames], latents.masked_condition[index, :, :latent_frames]
        )
        condition = torch.cat([keep, condition_latents], dim=1)
        image = latents.image[index]
    prompt = latents.prompt[index].float()
    prompt[torch.from_numpy(dropped)] = latents.empty_prompt.float()
    return x0, condition, prompt, image


def _flow_loss(transformer, x0, condition, prompt, image, generator) -> torch.Tensor:
    """MSE between the predicted velocity and noise - x0 at x_t = (1-t) x0 + t noise, t ~ U(0, 1).
    The batch and the noise are drawn on the CPU and moved to the transformer's device."""
    t = torch.rand(x0.shape[0], generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    x0, condition, prompt, image, t, noise = (v.to(transformer.device) for v in (x0, condition, prompt, image, t, noise))
    tt = t.view(-1, 1, 1, 1, 1)
    noisy = (1.0 - tt) * x0 + tt * noise
    velocity = transformer(
        hidden_states=torch.cat([noisy, condition], dim=1),
        timestep=t * 1000.0,
        encoder_hidden_states=prompt,
        encoder_hidden_states_image=image,
        return_dict=False,
    )[0]
    return (velocity.float() - (noise - x0)).pow(2).mean()


def train_transformer(transformer, latents: LatentSet, spec: WanSpec, settings: ToyTrainSettings, run: _Run) -> None:
    """Flow matching on ``latents``; the last 5% of samples are held out to watch overfitting.
    Leaves the EMA weights in ``transformer``."""
    count = len(latents)
    held_out = min(max(8, count // 20), count // 2)
    train_rows = count - held_out
    transformer.train().requires_grad_(True)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=settings.transformer_lr, betas=(0.9, 0.99), weight_decay=0.01
    )
    start = 0
    state = run.load("transformer")
    if state is not None:
        transformer.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    last_save, smoothed = time.monotonic(), None
    since, done = time.monotonic(), start
    for step in range(start, settings.transformer_steps):
        if run.out_of_time():
            break
        rng = np.random.default_rng([settings.seed, _TRANSFORMER_STAGE, step])
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        rows = rng.integers(0, train_rows, size=settings.transformer_batch)
        for group in optimizer.param_groups:
            group["lr"] = settings.transformer_lr * _lr_factor(
                step, settings.transformer_steps, settings.warmup_steps, run.clock(since)
            )
        loss = _flow_loss(transformer, *_draw_batch(latents, rows, rng, settings), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), transformer.parameters()):
                e.lerp_(p, 1.0 - decay)
        done = step + 1
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % 25 == 0:
            run.log(stage="transformer", step=step, loss=value, smoothed=smoothed)
        if step % 250 == 0 and step:
            run.log(stage="transformer", step=step, held_out_loss=_held_out_loss(ema, latents, train_rows, settings))
        if time.monotonic() - last_save > settings.checkpoint_every_s:
            run.save("transformer", {"model": transformer.state_dict(), "ema": ema.state_dict(),
                                     "optimizer": optimizer.state_dict(), "step": step + 1})  # fmt: skip
            last_save = time.monotonic()
    run.save("transformer", {"model": transformer.state_dict(), "ema": ema.state_dict(),
                             "optimizer": optimizer.state_dict(), "step": done})  # fmt: skip
    run.log(stage="transformer", step=done, held_out_loss=_held_out_loss(ema, latents, train_rows, settings))
    transformer.load_state_dict(ema.state_dict())
    transformer.eval().requires_grad_(False)


@torch.no_grad()
def _held_out_loss(model, latents: LatentSet, first_row: int, settings: ToyTrainSettings) -> dict[str, float]:
    """Flow loss of ``model`` on the held-out samples (fixed noise, 17-frame clips), per conditioning."""
    rows = np.arange(first_row, len(latents))
    keep_prompt = np.zeros(len(rows), dtype=bool)
    losses = {}
    for name, plain in (("plain_i2v", True), ("masked", False)):
        batch = _batch(latents, rows, _CLIP_LATENT_FRAMES[0], np.full(len(rows), plain), keep_prompt)
        generator = torch.Generator().manual_seed(settings.seed)
        losses[name] = round(float(_flow_loss(model, *batch, generator)), 5)
    return losses


def save_model(pipe, spec: WanSpec, settings: ToyTrainSettings, out_dir: Path, origin: dict | None = None) -> Path:
    """Write the pipeline as a diffusers directory in fp16 (``load_pipeline`` reads it back)."""
    pipe.to(device="cpu", dtype=torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    about = {"spec": asdict(spec), "settings": asdict(settings), "train_scene_seeds": [1_000_000, 2_000_000]}
    if origin is not None:
        about["init_from"] = origin
    # A run resumed with longer schedules continues the earlier runs' checkpoints: list every
    # distinct setting it went through, so the weights can be traced and reproduced.
    log_path = out_dir / "train_log.jsonl"
    if log_path.is_file():
        runs = []
        for line in log_path.read_text().splitlines():
            row = json.loads(line)
            if row.get("stage") == "start" and (not runs or runs[-1] != row["settings"]):
                runs.append(row["settings"])
        if len(runs) > 1:
            about["runs"] = runs
    (out_dir / "framecast_toy.json").write_text(json.dumps(about, indent=2) + "\n")
    return out_dir
