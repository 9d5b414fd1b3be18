"""The toy model's training script, run end to end at a tiny size: it must produce a diffusers
directory that ``load_pipeline`` reads, and resume instead of redoing finished stages."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from framecast.engine.toy.architectures import preset
from framecast.engine.toy.model import HELD_OUT_SEED_LIMIT, TRAIN_SCENE_SEEDS, vae_training_clip
from framecast.engine.toy.train import ToyTrainSettings, _lr_factor, _pooled_colour, _vae_draws, train_toy_model

TINY = preset("toy", frames=5, vae_base_dim=4, layers=1, heads=2, head_dim=12, ffn_dim=32)
QUICK = ToyTrainSettings(vae_steps=2, vae_finetune_steps=2, latent_scenes=3, transformer_steps=2,
                         transformer_batch=2, warmup_steps=1)  # fmt: skip


def test_training_scenes_never_overlap_the_held_out_ones():
    assert TRAIN_SCENE_SEEDS.start >= HELD_OUT_SEED_LIMIT


def test_training_clips_are_reproducible():
    a = vae_training_clip(np.random.default_rng([0, 1, 7]), TINY, 5)
    b = vae_training_clip(np.random.default_rng([0, 1, 7]), TINY, 5)
    assert a[0].shape == (5, 64, 64, 3) and a[1].shape == (5, 64, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_batches_drawn_ahead_by_worker_processes_are_the_ones_drawn_in_the_loop():
    settings = dataclasses.replace(QUICK, vae_image_batch=2, vae_clip_batch=2, vae_clip_frames=3, vae_steps=3)
    steps = range(1, 7)  # frames, short clips, fine-tune's whole clips
    inline = list(_vae_draws(1, TINY, settings, steps))
    ahead = list(_vae_draws(1, TINY, dataclasses.replace(settings, data_workers=2), steps))
    assert [step for step, _, _ in inline] == list(steps)
    assert [x.shape[2] for _, x, _ in inline] == [3, 1, 5, 1, 5, 1]
    for (step, x, weight), (other_step, y, other) in zip(inline, ahead, strict=True):
        assert step == other_step and torch.equal(x, y) and torch.equal(weight, other)
    # A loop that stops early closes the workers with it.
    draws = _vae_draws(1, TINY, dataclasses.replace(settings, data_workers=2), range(1000))
    next(draws)
    draws.close()


def test_the_learning_rate_anneals_along_the_steps_or_the_clock_whichever_is_further():
    assert _lr_factor(0, 100, 10) == 0.1 and _lr_factor(10, 100, 10) == 1.0
    assert _lr_factor(100, 100, 10) == pytest.approx(0.1)
    assert _lr_factor(55, 100, 10, clock=0.0) == pytest.approx(0.55)  # halfway along the steps
    assert _lr_factor(20, 100, 10, clock=0.5) == pytest.approx(0.55)  # halfway along the clock
    assert _lr_factor(20, 100, 10, clock=2.0) == pytest.approx(0.1)  # past the cap: the floor


def test_pooled_colour_follows_the_vae_chunks():
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 9, 1, 1).expand(2, 3, 9, 16, 16)
    pooled = _pooled_colour(x)
    assert pooled.shape == (2, 3, 3, 2, 2)
    assert pooled[0, 0, :, 0, 0].tolist() == [0.0, 2.5, 6.5]  # frame 0, frames 1-4, frames 5-8


def test_train_toy_model_writes_a_loadable_fp16_pipeline_and_resumes(tmp_path):
    from framecast.engine.model import load_pipeline

    out = train_toy_model(tmp_path / "toy", QUICK, TINY)
    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    pipe = load_pipeline(out)
    assert pipe.vae.config.latents_std != [1.0] * 16 and len(pipe.vae.config.latents_mean) == 16
    about = json.loads((out / "framecast_toy.json").read_text())
    assert about["spec"]["frames"] == 5

    # A second run finds every stage done and trains nothing again.
    seen = (out / "train_log.jsonl").read_text().count("\n")
    train_toy_model(out, QUICK, TINY)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()[seen:]]
    assert not [row for row in rows if "l1" in row or "loss" in row or row["stage"] == "latents"]

    # A longer schedule continues from the checkpoints, and the model records both runs.
    longer = dataclasses.replace(QUICK, transformer_steps=3)
    train_toy_model(out, longer, TINY)
    about = json.loads((out / "framecast_toy.json").read_text())
    assert about["settings"]["transformer_steps"] == 3
    assert [run["transformer_steps"] for run in about["runs"]] == [2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_toy_model_on_cuda_writes_the_same_kind_of_model(tmp_path):
    from framecast.engine.model import load_pipeline

    from safetensors import safe_open

    out = train_toy_model(tmp_path / "toy", dataclasses.replace(QUICK, device="cuda"), TINY)
    # Stored in fp16, as the CPU run stores it (load_pipeline then casts to the dtype it is asked for).
    with safe_open(out / "transformer" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    pipe = load_pipeline(out)
    assert pipe.transformer.dtype == torch.float32 and len(pipe.vae.config.latents_mean) == 16
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows[0]["settings"]["device"] == "cuda" and any("held_out_loss" in row for row in rows)


def test_widened_latents_decode_and_denoise_as_before():
    from framecast.engine.toy.architectures import build_components
    from framecast.engine.toy.train import widen_latent_channels

    old = build_components(TINY)
    new = build_components(dataclasses.replace(TINY, vae_z_dim=24, seed=1))
    widen_latent_channels(old, new)
    assert new["transformer"].config.in_channels == 2 * 24 + 4
    generator = torch.Generator().manual_seed(0)  # its own: the global generator's state depends on the tests before
    video = torch.rand(1, 3, 5, 64, 64, generator=generator) * 2 - 1
    with torch.no_grad():
        before = old["vae"].encode(video).latent_dist
        after = new["vae"].encode(video).latent_dist
        assert torch.equal(after.mode()[:, :16], before.mode()) and after.mode()[:, 16:].abs().sum() > 0
        assert after.std[:, 16:].max() < 0.01  # the new channels' posterior starts narrow
        assert torch.allclose(new["vae"].decode(after.mode()).sample, old["vae"].decode(before.mode()).sample)

        noisy, extra = torch.randn(1, 16, 2, 8, 8, generator=generator), torch.randn(1, 8, 2, 8, 8, generator=generator)
        condition = torch.randn(1, 4 + 16, 2, 8, 8, generator=generator)
        inputs = {"timestep": torch.tensor([500.0]), "encoder_hidden_states": torch.randn(1, 8, TINY.text_dim, generator=generator),
                  "encoder_hidden_states_image": torch.randn(1, 5, TINY.image_dim, generator=generator), "return_dict": False}  # fmt: skip
        velocity = old["transformer"](hidden_states=torch.cat([noisy, condition], 1), **inputs)[0]
        widened = torch.cat([noisy, extra, condition, torch.randn(1, 8, 2, 8, 8, generator=generator)], 1)
        wide_velocity = new["transformer"](hidden_states=widened, **inputs)[0]
    assert torch.allclose(wide_velocity[:, :16], velocity, atol=1e-5)
    assert not wide_velocity[:, 16:].any()


def test_a_run_can_start_from_an_earlier_model_with_wider_latents(tmp_path):
    from framecast.engine.model import load_pipeline

    first = train_toy_model(tmp_path / "z16", QUICK, TINY)
    wide = dataclasses.replace(TINY, vae_z_dim=24)
    out = train_toy_model(tmp_path / "z24", dataclasses.replace(QUICK, vae_steps=0), wide, init_from=first)
    pipe = load_pipeline(out)
    assert pipe.vae.config.z_dim == 24 and len(pipe.vae.config.latents_std) == 24
    about = json.loads((out / "framecast_toy.json").read_text())
    assert about["spec"]["vae_z_dim"] == 24 and about["init_from"]["dir"] == "z16"
    assert about["init_from"]["trained"]["spec"]["vae_z_dim"] == 16  # the chain of runs is traceable


def test_a_run_can_start_a_vae_of_other_levels_fresh_and_keep_the_transformer(tmp_path):
    from framecast.engine.model import load_pipeline

    first = train_toy_model(tmp_path / "s8", QUICK, TINY)
    settings = dataclasses.replace(QUICK, transformer_steps=0)
    out = train_toy_model(tmp_path / "s4", settings, dataclasses.replace(TINY, vae_dim_mult=(1, 2, 2)), init_from=first)
    before, after = load_pipeline(first), load_pipeline(out)
    assert before.vae_scale_factor_spatial == 8 and after.vae_scale_factor_spatial == 4
    assert after.vae.config.temperal_downsample == [True, True]
    for (key, a), b in zip(before.transformer.state_dict().items(), after.transformer.state_dict().values()):
        assert torch.equal(a, b), key
    assert after.vae.config.latents_std != before.vae.config.latents_std  # measured on the new VAE
    generator = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, TINY.frames, TINY.height, TINY.width, dtype=after.vae.dtype, generator=generator) * 2 - 1
    with torch.no_grad():
        latents = after.vae.encode(clip).latent_dist.mode()
    assert latents.shape[-2:] == (TINY.height // 4, TINY.width // 4)


def test_a_run_that_would_leave_a_fresh_vae_or_decoder_untrained_is_refused_before_it_starts(tmp_path):
    from framecast.engine.errors import InvalidInput
    from framecast.engine.model import builtin_model_dir

    shipped = builtin_model_dir()  # dim_mult 1,2,4,4, decoder as wide as the encoder
    no_vae = dataclasses.replace(QUICK, vae_steps=0, vae_finetune_steps=0, decoder_steps=0)
    with pytest.raises(InvalidInput) as levels:
        train_toy_model(tmp_path / "s4", no_vae, preset("toy", vae_dim_mult=(1, 2, 2)), init_from=shipped)
    assert levels.value.field == "vae_steps" and "[1, 2, 2]" in levels.value.reason
    with pytest.raises(InvalidInput) as decoder:
        train_toy_model(tmp_path / "d16", no_vae, preset("toy", vae_decoder_base_dim=16), init_from=shipped)
    assert decoder.value.field == "decoder_steps" and "16" in decoder.value.reason
    assert not (tmp_path / "s4").exists() and not (tmp_path / "d16").exists()


def test_a_run_can_train_a_wider_decoder_alone_and_keep_the_rest(tmp_path):
    from framecast.engine.model import load_pipeline

    first = train_toy_model(tmp_path / "d4", QUICK, TINY)
    settings = dataclasses.replace(QUICK, vae_steps=0, vae_finetune_steps=0, decoder_steps=3, transformer_steps=0)
    out = train_toy_model(tmp_path / "d8", settings, dataclasses.replace(TINY, vae_decoder_base_dim=8), init_from=first)
    before, after = load_pipeline(first), load_pipeline(out)
    assert after.vae.config.decoder_base_dim == 8 and after.vae.decoder.conv_in.out_channels == 4 * 8
    # The latents are the ones the transformer learned: encoder, its statistics and transformer are unchanged.
    for name, module in (("vae", "encoder"), ("vae", "quant_conv"), ("transformer", None)):
        old = getattr(before, name) if module is None else getattr(getattr(before, name), module)
        new = getattr(after, name) if module is None else getattr(getattr(after, name), module)
        for (key, a), b in zip(old.state_dict().items(), new.state_dict().values()):
            assert torch.equal(a, b), key
    assert after.vae.config.latents_mean == before.vae.config.latents_mean
    assert after.vae.config.latents_std == before.vae.config.latents_std
    generator = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, TINY.frames, TINY.height, TINY.width, dtype=after.vae.dtype, generator=generator) * 2 - 1
    with torch.no_grad():
        decoded = after.vae.decode(after.vae.encode(clip).latent_dist.mode()).sample
    assert decoded.shape == clip.shape and torch.isfinite(decoded).all()
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "decoder" and "val_psnr" in r] == [3]
    assert not any(r["stage"] in ("latents", "transformer") for r in rows)
