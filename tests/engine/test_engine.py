"""The engine on the built-in tiny model, loaded from disk with from_pretrained."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from framecast.common.requests import PropagateJob, TrainJob, TrainSettings
from framecast.engine.adapters.slots import AdapterState, AdapterStore
from framecast.engine.config import EngineConfig
from framecast.engine.engine import Engine
from framecast.engine.errors import (
    AdapterFailed,
    AdapterNotFound,
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    InvalidInput,
    TrainingDiverged,
)
from framecast.engine.jobs import checks
from framecast.engine.method import conditioning as C
from framecast.engine.method.sampling import decode_stream, feather_alpha


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path_factory.mktemp("engine-data"))


@dataclass
class Trained:
    """An adapter a fixture trained on the module's engine: its name and the progress its training reported."""

    name: str
    progress: list


FIT = TrainSettings(steps=40, rank=8, learning_rate=2e-3, seed=4, gradient_checkpointing=False)


@pytest.fixture(scope="module")
def fit_a(engine, scene):
    """`fit-a`: 40 motion steps at rank 8 on the scene, trained once for the tests that read it."""
    seen = []
    engine.train(TrainJob("fit-a", scene.source, scene.edit_mask, scene.prompt, FIT), seen.append)
    return Trained("fit-a", seen)


@pytest.fixture(scope="module")
def with_ref(engine, scene):
    """`with-ref`: 3 motion steps, then 4 appearance steps on the edited frame 4 as a reference."""
    settings = TrainSettings(steps=3, appearance_steps=4, rank=4, gradient_checkpointing=True)
    seen = []
    engine.train(TrainJob("with-ref", scene.source, scene.edit_mask, scene.prompt, settings,
                          references=[(4, scene.edited[4])]), seen.append)
    return Trained("with-ref", seen)


def test_loads_the_saved_pipeline(tiny_model_dir, tmp_path):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path)  # as loaded: no training has touched it
    assert type(engine.pipe).__name__ == "WanImageToVideoPipeline"
    assert engine.pipe.transformer.config.in_channels == 36
    assert not any(p.requires_grad for p in engine.pipe.transformer.parameters())


def test_training_lowers_the_loss_and_is_reproducible(engine, scene, fit_a):
    fit_b = []  # the same settings again, under another name
    engine.train(TrainJob("fit-b", scene.source, scene.edit_mask, scene.prompt, FIT), fit_b.append)
    losses = {}
    for name, seen in ((fit_a.name, fit_a.progress), ("fit-b", fit_b)):
        losses[name] = [p.loss for p in seen]
        assert [p.step for p in seen] == list(range(1, 41)) and seen[-1].phase == "motion"
    first, last = np.mean(losses["fit-a"][:8]), np.mean(losses["fit-a"][-8:])
    assert last < 0.8 * first, (first, last)
    np.testing.assert_allclose(losses["fit-a"], losses["fit-b"], rtol=1e-5)
    a, _ = engine.adapters.store.load(fit_a.name)
    b, _ = engine.adapters.store.load("fit-b")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_adapter_record_and_targets(engine, fit_a):
    record = engine.adapters.store.record(fit_a.name)
    assert record.rank == 8 and record.alpha == 8.0 and record.base_model == engine.base_model
    assert record.target_modules and not any("add_k_proj" in t or "add_v_proj" in t for t in record.target_modules)
    kinds = {t.split(".", 2)[2] for t in record.target_modules}
    assert kinds == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                     "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"}
    with pytest.raises(AlreadyExists):
        engine.train(TrainJob(fit_a.name, np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 64, 64), bool), "p"))


def test_appearance_phase_with_a_reference_frame(with_ref):
    seen = with_ref.progress
    assert [p.phase for p in seen] == ["motion"] * 3 + ["appearance"] * 4
    assert seen[-1].total == 7


def test_nothing_needs_gradients_after_a_training(engine, scene, fit_a):
    """The hot-swap slot's weights are written in place, never trained: a training adapter leaving
    the transformer (peft then makes the slot, the adapter left, trainable) leaves them frozen."""
    engine.propagate(PropagateJob(fit_a.name, scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=1))
    settings = TrainSettings(steps=1, appearance_steps=1, rank=2, gradient_checkpointing=False)
    engine.train(TrainJob("frozen-after", scene.source, scene.edit_mask, scene.prompt, settings,
                          references=[(0, scene.edited[0])]))  # fmt: skip
    assert [n for n, p in engine.pipe.transformer.named_parameters() if p.requires_grad] == []


def test_colour_variants_join_the_motion_phase(engine, scene):
    settings = TrainSettings(steps=4, rank=2, colour_variants=2, gradient_checkpointing=False)
    losses = []
    engine.train(TrainJob("variants", scene.source, scene.edit_mask, scene.prompt, settings), lambda p: losses.append(p.loss))
    assert len(losses) == 4 and engine.adapters.store.record("variants").training["colour_variants"] == 2
    # Steps cycle through the clip and its two recoloured copies: the third sample is not the first.
    assert len(set(losses)) == 4
    with pytest.raises(InvalidInput, match="colour_variants"):
        engine.train(TrainJob("too-many", scene.source, scene.edit_mask, "p", TrainSettings(colour_variants=17)))


def test_cancel_between_steps_leaves_nothing(engine, scene):
    calls = []

    def cancel_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        engine.train(TrainJob("cancelled", scene.source, scene.edit_mask, "p", TrainSettings(steps=50, rank=2)),
                     should_cancel=cancel_after_two)
    assert not engine.adapters.store.exists("cancelled") and "cancelled" not in engine.adapters.slots.attached
    assert engine.adapters.slots.status("cancelled").state == AdapterState.READY  # a cancel is not a failure
    # The model is usable afterwards, with and without adapters.
    engine.propagate(PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=1))


def test_a_failed_training_stays_failed_until_trained_again(engine, scene):
    def crash(progress):
        raise RuntimeError("device lost")

    job = TrainJob("crashes", scene.source, scene.edit_mask, "p", TrainSettings(steps=4, rank=2))
    with pytest.raises(RuntimeError):
        engine.train(job, on_progress=crash)
    status = engine.adapters.slots.status("crashes")
    # Clients read the error's type, never its text (that is for the server log).
    assert status.state == AdapterState.FAILED and status.error == "training failed: RuntimeError (see the server log)"
    assert not engine.adapters.store.exists("crashes")
    # A refused request leaves the mark as it was: it never started.
    with pytest.raises(InvalidInput, match="rank"):
        engine.train(TrainJob("crashes", scene.source, scene.edit_mask, "p", TrainSettings(rank=0)))
    assert engine.adapters.slots.status("crashes").state == AdapterState.FAILED
    # The mark is on disk too, where a restarted engine finds it.
    assert engine.adapters.store.failures() == {"crashes": status.error}
    # Using it says why it cannot be used, not that it does not exist.
    failed = r"adapter 'crashes' failed to train: RuntimeError \(see the server log\); train it again or delete it"
    for use in (lambda: engine.prepare_propagate(PropagateJob("crashes", scene.source, scene.edit_mask,
                                                               scene.edited_first_frame, "p")),
                lambda: engine.adapters.load("crashes"), lambda: engine.adapters.store.export("crashes")):
        with pytest.raises(AdapterFailed, match=failed):
            use()
    engine.train(job)
    assert engine.adapters.slots.status("crashes").state != AdapterState.FAILED and engine.adapters.store.failures() == {}
    engine.adapters.delete("crashes")


def test_deleting_a_failed_training_clears_it_and_a_training_one_is_refused(engine, scene):
    def crash(progress):
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError):
        engine.train(TrainJob("crashed", scene.source, scene.edit_mask, "p", TrainSettings(steps=2, rank=2)), crash)
    engine.adapters.delete("crashed")
    assert engine.adapters.slots.status("crashed").state == AdapterState.READY and "crashed" not in engine.adapters.store.failures()
    with pytest.raises(AdapterNotFound):
        engine.adapters.delete("crashed")

    refusals = []

    def use_while_training(progress):
        if progress.step == 1:
            for use in (lambda: engine.adapters.delete("in-training"), lambda: engine.prepare_propagate(
                    PropagateJob("in-training", scene.source, scene.edit_mask, scene.edited_first_frame, "p"))):
                with pytest.raises(FailedPrecondition) as caught:
                    use()
                refusals.append(str(caught.value))

    engine.train(TrainJob("in-training", scene.source, scene.edit_mask, "p", TrainSettings(steps=2, rank=2)), use_while_training)
    assert len(refusals) == 2 and all("'in-training' is being trained" in r for r in refusals), refusals
    engine.adapters.delete("in-training")


def test_training_counts_as_a_use_that_a_restart_remembers(engine, scene):
    engine.train(TrainJob("just-trained", scene.source, scene.edit_mask, "p", TrainSettings(steps=1, rank=2)))
    trained_at = engine.adapters.slots.status("just-trained").last_used_at
    assert trained_at > 0 and engine.adapters.store.last_used()["just-trained"] == pytest.approx(trained_at, abs=1e-3)
    restarted = Engine(engine.config, engine.adapters.store.root.parent)
    assert restarted.adapters.slots.status("just-trained").last_used_at == pytest.approx(trained_at, abs=1e-3)


def test_a_diverging_loss_stops_training_without_an_update(engine, scene):
    from framecast.engine.method.training import train_lora

    settings = TrainSettings(steps=3, rank=2, gradient_checkpointing=False)
    from framecast.engine.jobs.checks import PromptCounter

    prompt = PromptCounter(engine.pipe.tokenizer).ids("prompt", "p")
    sample = engine.encoders.motion_sample(scene.source, scene.edit_mask, prompt, settings)
    sample.target_latents = torch.full_like(sample.target_latents, float("inf"))
    engine.adapters.slots.add_trainable("diverges", settings.rank, settings.lora_alpha, settings.seed)
    before = {k: v.clone() for k, v in engine.adapters.slots.state_dict("diverges").items()}
    try:
        with pytest.raises(TrainingDiverged, match=r"loss was nan at step 1 of 3 \(motion phase\).*learning_rate"):
            train_lora(engine.pipe.transformer, [("motion", [sample], 3)], settings)
        after = engine.adapters.slots.state_dict("diverges")
        assert all(torch.equal(before[k], after[k]) for k in before)  # the bad step changed nothing
    finally:
        engine.adapters.slots.detach("diverges")
        for param in engine.pipe.transformer.parameters():
            param.requires_grad_(False)


def test_propagation_streams_frames_and_switches_adapters_without_reload(engine, scene, fit_a, with_ref):
    job = PropagateJob(fit_a.name, scene.source, scene.edit_mask, scene.edited_first_frame, scene.edited_prompt,
                       steps=2, seed=9)
    chunks = []
    transformer = engine.pipe.transformer
    a1 = engine.propagate(job, on_frames=lambda first, frames: chunks.append((first, len(frames))))
    assert chunks == [(0, 1), (1, 4), (5, 4)]  # one latent frame at a time
    job_b = PropagateJob(with_ref.name, **{k: v for k, v in vars(job).items() if k != "adapter"})
    b = engine.propagate(job_b)
    a2 = engine.propagate(job)
    assert engine.pipe.transformer is transformer
    assert np.array_equal(a1.frames, a2.frames) and not np.array_equal(a1.frames, b.frames)


def test_decode_stream_equals_whole_decode(engine):
    latents = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    streamed = np.concatenate(list(decode_stream(engine.pipe, latents)))
    vae = engine.pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        whole = vae.decode(latents * std + mean, return_dict=False)[0]
    whole = ((whole[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert streamed.shape == (9, 64, 64, 3)
    assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 1


def test_validation_names_fields(engine, scene):
    source, mask = scene.source, scene.edit_mask
    with pytest.raises(InvalidInput, match="mask.num_frames"):
        engine.prepare_propagate(PropagateJob("", source, mask[:3], scene.edited_first_frame, "p"))
    with pytest.raises(InvalidInput, match="edited_first_frame"):
        engine.prepare_propagate(PropagateJob("", source, mask, scene.edited_first_frame[:32], "p"))
    with pytest.raises(AdapterNotFound):
        engine.prepare_propagate(PropagateJob("ghost", source, mask, scene.edited_first_frame, "p"))
    with pytest.raises(InvalidInput, match="references.frame_index"):
        engine.prepare_train(TrainJob("r", source, mask, "p", references=[(99, source[0])]))


def test_mask_options_are_checked_before_training_starts(engine, scene):
    # Refused up front, so the name is not left FAILED by a job that could never have run.
    huge = TrainJob("huge-dilation", scene.source, scene.edit_mask, "p", TrainSettings(steps=1, rank=2),
                    mask_mode="dilate", dilate_px=4294967295)
    with pytest.raises(InvalidInput, match=r"dilate_px must be between 0 and 64 .*got 4294967295"):
        engine.train(huge)
    with pytest.raises(InvalidInput, match="mask_mode"):
        engine.train(TrainJob("huge-dilation", scene.source, scene.edit_mask, "p", mask_mode="blur"))
    assert engine.adapters.slots.status("huge-dilation").state == AdapterState.READY
    assert "huge-dilation" not in engine.adapters.store.failures()
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=1,
                       mask_mode="dilate", dilate_px=65)
    with pytest.raises(InvalidInput, match="dilate_px"):
        engine.prepare_propagate(job)
    job.dilate_px = 64  # the whole frame, whatever the mask
    assert engine.propagate(job).edit_mask[1:].all()


@pytest.mark.parametrize("weights", [(float("nan"), 1.0), (1.0, float("inf")), (-1.0, 1.0), (0.0, 0.0)])
def test_loss_weights_must_be_finite_and_not_negative(engine, scene, weights):
    settings = TrainSettings(steps=1, rank=2, w_edit=weights[0], w_keep=weights[1])
    with pytest.raises(InvalidInput, match="loss_weights must be finite, >= 0 and not both 0"):
        engine.train(TrainJob("bad-weights", scene.source, scene.edit_mask, "p", settings))
    assert engine.adapters.slots.status("bad-weights").state == AdapterState.READY


@pytest.mark.parametrize("field, value", [("learning_rate", float("nan")), ("guidance_scale", float("nan")),
                                          ("guidance_scale", float("inf")), ("adapter_strength", float("nan")),
                                          ("adapter_strength", 2.5), ("adapter_strength", -0.5)])
def test_other_float_settings_refuse_nan_and_inf(engine, scene, field, value):
    with pytest.raises(InvalidInput, match=field):
        if field == "learning_rate":
            engine.prepare_train(TrainJob("x", scene.source, scene.edit_mask, "p", TrainSettings(learning_rate=value)))
        else:
            engine.prepare_propagate(PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p",
                                                   **{field: value}))


@pytest.mark.parametrize("field", ["max_vram_gb", "adapter_host_cache_gb"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_memory_sizes_in_the_config_must_be_finite(tiny_model_dir, field, value):
    with pytest.raises(InvalidInput, match=f"{field} must be a finite number >= 0"):
        EngineConfig(model_dir=str(tiny_model_dir), **{field: value})


def test_feather_alpha_stops_eroding_once_nothing_changes():
    mask = np.zeros((2, 16, 24), bool)
    mask[0, 3:12, 4:20] = True
    mask[1] = True  # the whole frame: the frame's edge does not erode it

    def eroded_every_round(feather_px):
        m = torch.from_numpy(mask).float()[:, None]
        total = torch.zeros_like(m)
        for _ in range(feather_px):
            total += m
            m = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)
        return (total / feather_px)[:, 0].numpy()

    for feather_px in (1, 3, 5, 6, 24):
        np.testing.assert_array_equal(feather_alpha(mask, feather_px), eroded_every_round(feather_px))


def test_store_ignores_half_written_adapters(tmp_path):
    store = AdapterStore(tmp_path)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "adapter.safetensors").write_bytes(b"partial")  # crash before the record
    assert store.list() == [] and not store.exists("torn")
    with pytest.raises(AdapterNotFound):
        store.load("torn")
    with pytest.raises(InvalidInput, match="adapter"):
        store.record("../escape")


def test_exported_file_carries_diffusers_metadata(engine, fit_a):
    from safetensors import safe_open

    path = engine.adapters.store.weights_path(fit_a.name)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        keys = list(f.keys())
    config = json.loads(metadata["lora_adapter_metadata"])
    assert config["transformer.r"] == 8 and config["transformer.lora_alpha"] == 8.0
    assert json.loads(metadata["framecast.adapter"])["name"] == "fit-a"
    assert all(k.startswith("transformer.blocks.") and (".lora_A." in k or ".lora_B." in k) for k in keys)


def test_a_mask_bbox_mode_empties_is_refused():
    """At 832x480 bbox mode drops regions under 50 px: a mask of only such specks leaves nothing to edit."""
    speck = np.zeros((5, 480, 832), bool)
    speck[:, 100:105, 200:205] = True  # 25 px
    with pytest.raises(InvalidInput, match="mask leaves no edit region.*50 px at 832x480.*mask_mode bbox"):
        checks.edit_mask(speck, C.MaskMode.BBOX, 0)
    checks.edit_mask(speck, C.MaskMode.EXACT, 0)
    checks.edit_mask(speck, C.MaskMode.DILATE, 4)
    # One frame with a region bbox keeps is enough; the others may have none.
    speck[3, 300:320, 400:420] = True
    checks.edit_mask(speck, C.MaskMode.BBOX, 0)
    with pytest.raises(InvalidInput, match="mask_mode must be exact, bbox or dilate"):
        checks.edit_mask(speck, "blur", 0)


def _sentencepiece_style_tokenizer():
    """A small tokenizer of UMT5's kind (a Unigram model over "▁"-prefixed pieces, NFKC, `</s>` appended),
    built locally: the real one cannot be downloaded here."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = ("a", "red", "cat", "walks", "on", "the", "grass", "jacket")
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz.,"] + [("▁" + w, -3.0) for w in words]
    core = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    core.normalizer = normalizers.NFKC()
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                           model_max_length=512)  # fmt: skip


def test_prompt_tokens_count_what_the_pipeline_keeps_with_a_umt5_style_tokenizer(engine):
    """The prompt limit counts tokens as the pipeline's own encoding does (its clean-up, then the
    tokenizer with `</s>`): checked against the rows ``encode_prompt`` keeps, with a tokenizer of
    the real model's kind, words that are one piece, words spelt out, and unknown characters."""
    import copy

    from framecast.engine.method.sampling import MAX_PROMPT_TOKENS, encode_prompt_ids, tokenize_prompt

    def prompt_tokens(tokenizer, prompt):
        return len(tokenize_prompt(tokenizer, prompt))

    pipe = copy.copy(engine.pipe)
    pipe.tokenizer = _sentencepiece_style_tokenizer()
    prompts = ["a red cat walks on the grass", "  a   RED jacket\n\n on  the\tgrass &amp; ✓ ",
               "the cat " * 200, "zebra " * 100 + "a"]  # fmt: skip
    for prompt in prompts:
        counted = prompt_tokens(pipe.tokenizer, prompt)
        embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=MAX_PROMPT_TOKENS,
                                       device=torch.device("cpu"))  # fmt: skip
        kept = int(embeds[0].abs().sum(dim=-1).gt(0).sum())  # the pipeline zeroes the rows past the prompt
        assert kept == min(counted, MAX_PROMPT_TOKENS), prompt
        if counted <= MAX_PROMPT_TOKENS:  # what the engine encodes from the ids it counted: the pipeline's own
            ids = tokenize_prompt(pipe.tokenizer, prompt)
            torch.testing.assert_close(encode_prompt_ids(pipe, ids, torch.device("cpu")), embeds, rtol=0, atol=0)
    assert prompt_tokens(pipe.tokenizer, "the cat " * 200) == 401  # one piece per word, then </s>
    assert prompt_tokens(pipe.tokenizer, "zebra " * 100 + "a") > MAX_PROMPT_TOKENS  # spelt out: 6 pieces a word


def test_a_vae_with_another_spatial_factor_trains_and_propagates(tmp_path, scene):
    """The latent grid follows the loaded VAE's own spatial factor (here 4x, three levels), not Wan2.1's 8x."""
    from framecast.engine.toy.architectures import make_tiny_model, preset

    model_dir = make_tiny_model(tmp_path / "wan-tiny-s4", preset("tiny", vae_dim_mult=(1, 1, 1)))
    engine = Engine(EngineConfig(model_dir=str(model_dir)), tmp_path / "data")
    assert engine.pipe.vae_scale_factor_spatial == 4
    seen = []
    settings = TrainSettings(steps=3, rank=4, seed=1, gradient_checkpointing=False)
    engine.train(TrainJob("s4", scene.source, scene.edit_mask, scene.prompt, settings), seen.append)
    assert len(seen) == 3 and all(np.isfinite(p.loss) for p in seen)
    job = PropagateJob("s4", scene.source, scene.edit_mask, scene.edited_first_frame, scene.edited_prompt, steps=2)
    result = engine.propagate(job)
    assert result.frames.shape == scene.source.shape
    keep = C.latent_keep_mask(scene.edit_mask, spatial=4)
    assert keep.shape == (1, 4, 3, 16, 16) and 0 < keep[:, :, 1:].mean() < 1
    assert C.loss_weight(scene.edit_mask, spatial=4).shape == (1, 1, 3, 16, 16)
