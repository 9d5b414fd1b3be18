"""Memory options on the tiny model: quantised QLoRA, offloading, 8-bit AdamW, tiling, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from framecast.common.requests import PropagateJob, TrainJob, TrainSettings
from framecast.engine.config import EngineConfig
from framecast.engine.engine import Engine
from framecast.engine.errors import InvalidInput, OutOfMemory
from framecast.engine.memory.sizes import GiB, memory_size
from framecast.engine.toy.world import SceneConfig, make_scene


@pytest.fixture(scope="module")
def clip():
    return make_scene(2, SceneConfig(frames=9, height=64, width=64, sprites=1))


def _bnb_weights(transformer) -> dict[str, bytes]:
    return {
        name.replace(".base_layer", ""): module.weight.data.cpu().numpy().tobytes()
        for name, module in transformer.named_modules()
        if type(module).__module__.startswith("bitsandbytes")
    }


@pytest.mark.parametrize(
    "options, linear_type",
    [
        ({"quantize": "nf4"}, "Linear4bit"),
        ({"quantize": "int8"}, "Linear8bitLt"),
        ({"quantize": "nf4", "optimizer": "adamw8bit", "offload": "model"}, "Linear4bit"),
        ({"offload": "group"}, "Linear"),
        ({"vae_tiling": True}, "Linear"),
    ],
)
def test_memory_options_train_and_propagate(options, linear_type, tiny_model_dir, tmp_path, clip):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), **options), tmp_path)
    info = engine.info()
    assert info.quantization == options.get("quantize", "none")
    assert info.offload == options.get("offload", "none")
    assert info.attention_backend == "sdpa"  # no xformers kernels on a CPU
    query = engine.pipe.transformer.blocks[0].attn1.to_q
    assert type(query).__name__ == linear_type
    quantized_before = _bnb_weights(engine.pipe.transformer)

    losses = []
    settings = TrainSettings(steps=20, rank=4, learning_rate=3e-3, gradient_checkpointing=True)
    engine.train(TrainJob("low", clip.source, clip.edit_mask, "p", settings), lambda p: losses.append(p.loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # QLoRA: the adapter wraps the quantised layer and is never fused into it.
    wrapped = engine.pipe.transformer.blocks[0].attn1.to_q
    assert type(wrapped.base_layer).__name__ == linear_type
    assert _bnb_weights(engine.pipe.transformer) == quantized_before

    result = engine.propagate(PropagateJob("low", clip.source, clip.edit_mask, clip.edited_first_frame, "p", steps=2))
    assert result.frames.shape == (9, 64, 64, 3)
    again = engine.propagate(PropagateJob("low", clip.source, clip.edit_mask, clip.edited_first_frame, "p", steps=2))
    assert np.array_equal(result.frames, again.frames)


def test_quantized_output_stays_close_to_full_precision(tiny_model_dir, tmp_path, clip):
    job = PropagateJob("", clip.source, clip.edit_mask, clip.edited_first_frame, "p", steps=2, seed=1)
    full = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "a").propagate(job).frames
    int8 = Engine(EngineConfig(model_dir=str(tiny_model_dir), quantize="int8"), tmp_path / "b").propagate(job).frames
    assert np.abs(full.astype(int) - int8.astype(int)).mean() < 8


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_quantized_text_encoder_keeps_the_prompt_embedding(quantize, tiny_model_dir):
    """UMT5's FFN output projection casts its input to its weight's dtype: quantised to NF4 (uint8
    storage) it turned every prompt embedding into noise (cosine 0.07 here). It stays unquantised."""
    import torch

    from framecast.engine.memory.lowvram import quantize_pipeline
    from framecast.engine.model import load_pipeline

    pipe = load_pipeline(tiny_model_dir, torch.device("cpu"), torch.float32)
    ids = pipe.tokenizer(["a red sprite moving over a striped floor"], return_tensors="pt").input_ids
    with torch.no_grad():
        full = pipe.text_encoder(ids).last_hidden_state
        counts = quantize_pipeline(pipe, quantize, torch.float32, "cpu")
        quantized = pipe.text_encoder(ids).last_hidden_state
    assert counts["text_encoder"] > 0
    assert all(type(block.layer[-1].DenseReluDense.wo) is torch.nn.Linear for block in pipe.text_encoder.encoder.block)
    assert quantized.dtype == full.dtype
    assert torch.nn.functional.cosine_similarity(full.flatten(), quantized.flatten(), dim=0) > 0.85


def test_budget_picks_windows_or_refuses(tiny_model_dir, tmp_path):
    scene = make_scene(4, SceneConfig(frames=17, height=64, width=64, sprites=1))
    probe = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "probe")
    need = {n: probe.memory_plan("none", "none", n, 64, 64, training=False).peak_bytes
            for n in (9, 17)}
    assert need[9] < need[17]
    budget_gb = (need[9] + need[17]) / 2 / GiB
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), max_vram_gb=budget_gb), tmp_path / "fit")
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=1)
    assert engine.propagate(job).windows > 1  # the whole clip would not fit; windows of 13 or fewer do

    with pytest.raises(OutOfMemory, match="window_frames"):
        engine.prepare_propagate(PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p",
                                               window_frames=17))
    starved = Engine(EngineConfig(model_dir=str(tiny_model_dir), max_vram_gb=1e-6), tmp_path / "starved")
    with pytest.raises(OutOfMemory, match="over the budget"):
        starved.prepare_propagate(job)


def test_whole_clips_must_fit_the_budget(tiny_model_dir, tmp_path):
    """window_frames 0 never cuts a clip: under a budget the estimate is the whole clip's, and a
    clip over it is refused before it starts, naming its frames, size and the budget."""
    short, long = (make_scene(4, SceneConfig(frames=n, height=64, width=64, sprites=1)) for n in (9, 17))
    probe = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "probe")
    need = {n: probe.memory_plan("none", "none", n, 64, 64, training=False).peak_bytes
            for n in (9, 17)}
    # A training decodes nothing and computes no SSIM: on the tiny model its peak is the text
    # encoder's, as the 9-frame generation's, a little over it for its longer clip.
    need_train = probe.memory_plan("none", "none", 17, 64, 64, training=True).peak_bytes
    assert need[9] < need_train
    budget_gb = (need[9] + min(need[17], need_train)) / 2 / GiB
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), max_vram_gb=budget_gb, window_frames=0), tmp_path / "w0")

    engine.prepare_propagate(PropagateJob("", short.source, short.edit_mask, short.edited_first_frame, "p"))
    assert engine.plan_windows(*short.source.shape[:3], 0, None, training=False).count == 1
    job = PropagateJob("", long.source, long.edit_mask, long.edited_first_frame, "p", steps=1)
    with pytest.raises(OutOfMemory) as refused:
        engine.prepare_propagate(job)
    assert str(refused.value) == (
        f"generating 64x64 as one clip of 17 frames needs ~{memory_size(need[17])} of device memory, over the budget "
        f"of {memory_size(budget_gb * GiB)}; this server does not cut clips into windows (window_frames 0): ask for "
        "a window_frames"
    )
    with pytest.raises(OutOfMemory, match="^training 64x64 as one clip of 17 frames needs .* over the budget of "):
        engine.prepare_train(TrainJob("a", long.source, long.edit_mask, "p", TrainSettings(steps=1, rank=4)))
    # A request may still ask for windows: then each window must fit.
    assert engine.plan_windows(*long.source.shape[:3], 9, None, training=False).count == 3
    assert engine.propagate(PropagateJob("", long.source, long.edit_mask, long.edited_first_frame, "p", steps=1,
                                         window_frames=9)).windows == 3  # fmt: skip


def test_auto_settings_are_planned_for_whole_clips_under_window_frames_0(tiny_model_dir, tmp_path):
    """The auto settings fit a window of at most 13 frames, or, when clips are never cut, the
    longest clip the server accepts (not 0 frames, which would fit any budget the weights fit)."""
    assert [EngineConfig(model_dir=str(tiny_model_dir), window_frames=w, max_frames=33).planning_frames
            for w in (81, 9, 0)] == [13, 9, 33]  # fmt: skip
    probe = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "probe")
    need = {(q, n): probe.memory_plan(q, "none", n, 480, 832, training=True).peak_bytes
            for q in ("none", "int8") for n in (13, 33)}  # fmt: skip
    assert need["none", 13] < need["int8", 33] < need["none", 33]
    budget_gb = (need["int8", 33] + need["none", 33]) / 2 / GiB
    settings = dict(model_dir=str(tiny_model_dir), quantize="auto", max_vram_gb=budget_gb, max_frames=33)
    assert Engine(EngineConfig(**settings), tmp_path / "windows").quantize.value == "none"
    assert Engine(EngineConfig(**settings, window_frames=0), tmp_path / "whole").quantize.value == "int8"


def test_memory_size_stays_readable_for_small_figures():
    assert [memory_size(n) for n in (3 * GiB, GiB // 4, 1.5 * (1 << 20), float("inf"))] == [
        "3.00 GiB", "256.00 MiB", "1.50 MiB", "inf"]  # fmt: skip


def test_auto_settings_follow_the_budget(tiny_model_dir, tmp_path):
    roomy = Engine(EngineConfig(model_dir=str(tiny_model_dir), quantize="auto", offload="auto", max_vram_gb=64), tmp_path)
    assert (roomy.quantize.value, roomy.offload.value) == ("none", "none")
    with pytest.raises(InvalidInput, match="max_vram_gb"):
        EngineConfig(model_dir=str(tiny_model_dir), quantize="auto")
    with pytest.raises(InvalidInput, match="attention"):
        EngineConfig(model_dir=str(tiny_model_dir), attention="flash9")


def test_xformers_refused_where_it_cannot_run(tiny_model_dir, tmp_path):
    with pytest.raises(InvalidInput, match="xformers"):
        Engine(EngineConfig(model_dir=str(tiny_model_dir), attention="xformers"), tmp_path)
