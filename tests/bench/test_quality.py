"""A short run of ``bench/quality.py`` on the shipped toy model: a functional test of the method.

On held-out scenes (seeds never used in training), an adapter trained on the source video
must carry the edited first frame through the clip better, inside the edit mask, than the
base model doing plain image-to-video from that frame (baseline (a)). A swapped mask
convention, a wrong frame-0 repeat or conditioning on the wrong frames breaks this.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from quality import QualityOptions, evaluate_scene, held_out_scene  # noqa: E402

from framecast.engine.model import builtin_model_dir  # noqa: E402

pytestmark = pytest.mark.slow
# The motion phase alone (the method's core; no appearance phase on the edited first frame).
SHORT = QualityOptions(steps=200, colour_variants=7, sample_steps=12, windowed=False, composite=False,
                       first_frame_reference=False)
SEEDS = (0, 1, 2, 3)
METHODS = ("framecast", "(a) plain I2V")


@pytest.fixture(scope="module")
def toy_engine(tmp_path_factory):
    import torch

    from framecast.engine.config import EngineConfig
    from framecast.engine.engine import Engine

    model = builtin_model_dir()
    assert (model / "model_index.json").is_file(), f"the built-in toy model is missing: {model}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster and immune to a busy second core
    yield Engine(EngineConfig(model_dir=str(model), device="cpu"), tmp_path_factory.mktemp("quality-data"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(toy_engine):
    return {seed: evaluate_scene(toy_engine, held_out_scene(seed), SHORT, methods=METHODS) for seed in SEEDS}


def test_the_builtin_model_loads_from_its_fp16_directory(toy_engine):
    import torch

    pipe = toy_engine.pipe
    assert type(pipe).__name__ == "WanImageToVideoPipeline"
    assert pipe.transformer.dtype == torch.float32 and pipe.vae.dtype == torch.float32  # stored fp16, run fp32
    assert pipe.transformer.config.in_channels == 36 and pipe.vae.config.z_dim == 16
    size = sum(f.stat().st_size for f in builtin_model_dir().rglob("*") if f.is_file())
    assert size <= 10 * 2**20, f"the shipped model is {size / 2**20:.1f} MiB, over 10 MiB"


def test_adapter_beats_plain_i2v_inside_the_mask(results):
    framecast = {seed: r["framecast"]["masked_psnr"] for seed, r in results.items()}
    plain = {seed: r["(a) plain I2V"]["masked_psnr"] for seed, r in results.items()}
    report = ", ".join(f"scene {s}: {framecast[s]:.2f} vs {plain[s]:.2f} dB" for s in SEEDS)
    wins = sum(framecast[s] > plain[s] for s in SEEDS)
    assert wins >= len(SEEDS) - 1, f"framecast beats plain I2V on {wins}/{len(SEEDS)} scenes ({report})"
    assert statistics.fmean(framecast.values()) > statistics.fmean(plain.values()) + 0.5, report


def test_background_follows_the_source_without_compositing(results):
    # The method gives the model every frame's background; plain I2V has only frame 0.
    framecast = statistics.fmean(r["framecast"]["background_psnr"] for r in results.values())
    plain = statistics.fmean(r["(a) plain I2V"]["background_psnr"] for r in results.values())
    assert framecast > plain + 0.5, f"background PSNR: framecast {framecast:.2f} dB, plain I2V {plain:.2f} dB"
