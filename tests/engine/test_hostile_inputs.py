"""Inputs built to break the server get a refusal naming what is wrong, never an internal error:
hostile adapter metadata, names with a trailing newline, the largest seed across windows, and an
archive that inflates far beyond its size."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save

from framecast.engine.adapters.formats import normalise
from framecast.engine.adapters.store import check_adapter_name
from framecast.engine.errors import InvalidInput
from framecast.engine.footage.read import Limits, probe

SHAPES = {"blocks.0.attn1.to_q": (8, 8), "blocks.1.attn2.to_v": (8, 8)}


def _lora(metadata: dict) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(0)
    tensors = {f"transformer.{m}.lora_{p}.weight": torch.randn(shape, generator=generator)
               for m in SHAPES for p, shape in (("A", (4, 8)), ("B", (8, 4)))}  # fmt: skip
    return tensors, {"lora_adapter_metadata": json.dumps(metadata)}


@pytest.mark.parametrize(("metadata", "field"), [
    ({"transformer.alpha_pattern": {"(a+)+$": 4}}, "alpha_pattern"),  # a regex, never compiled
    ({"transformer.alpha_pattern": {"[unclosed": 4}}, "alpha_pattern"),
    ({"transformer.alpha_pattern": ["blocks.0"]}, "alpha_pattern"),
    ({"transformer.alpha_pattern": {"blocks.0.attn1.to_q": "x"}}, "alpha_pattern"),
    ({"transformer.lora_alpha": "abc"}, "lora_alpha"),
])  # fmt: skip
def test_hostile_peft_metadata_is_refused_naming_the_key(metadata, field):
    with pytest.raises(InvalidInput, match=field):
        normalise(*_lora(metadata), SHAPES)


def test_alpha_patterns_match_module_names_and_their_suffixes():
    tensors, metadata = _lora({"transformer.lora_alpha": 4, "transformer.alpha_pattern": {"attn2.to_v": 8}})
    lora = normalise(tensors, metadata, SHAPES)
    plain = normalise(*_lora({}), SHAPES)
    b = "transformer.{}.lora_B.weight"
    torch.testing.assert_close(lora.state_dict[b.format("blocks.0.attn1.to_q")], plain.state_dict[b.format("blocks.0.attn1.to_q")])
    torch.testing.assert_close(lora.state_dict[b.format("blocks.1.attn2.to_v")], 2 * plain.state_dict[b.format("blocks.1.attn2.to_v")])


@pytest.mark.parametrize("name", ["trail\n", "evil\n", "a\nb", "x" * 65, ""])
def test_adapter_names_with_a_newline_are_refused(name):
    with pytest.raises(InvalidInput, match="must be 1-64 letters"):
        check_adapter_name(name)
    assert check_adapter_name("base-a_1") == "base-a_1"


def test_an_archive_that_inflates_beyond_any_frame_is_refused_before_it_is_inflated():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("00000.png", b"\0" * (64 << 20))  # 64 MiB of zeros: a few KiB zipped
    data = buffer.getvalue()
    assert len(data) < 1 << 20
    with pytest.raises(InvalidInput, match="inflates beyond .*00000.png: 67108864 bytes"):
        probe(data, "data", Limits(max_pixels=1920 * 1080))


def test_the_largest_seed_wraps_across_windows(tiny_model_dir, tmp_path):
    from framecast.common.requests import PropagateJob
    from framecast.engine.config import EngineConfig
    from framecast.engine.engine import Engine
    from framecast.engine.toy.world import SceneConfig, make_scene

    scene = make_scene(1, SceneConfig(frames=9, sprites=1))
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path)
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=1, seed=2**64 - 1,
                       window_frames=5, overlap_frames=1)  # fmt: skip
    result = engine.propagate(job)
    assert result.windows == 2 and result.frames.shape == scene.source.shape
