"""A model's recommended settings (framecast.json beside model_index.json): read, checked at
start, and filled under a request's own settings and its preset's."""

from __future__ import annotations

import json

import pytest

from framecast.common.requests import StepCache
from framecast.engine.errors import InvalidInput
from framecast.engine.model import builtin_model_dir
from framecast.engine.model_settings import DEFAULT_PRESETS, ModelSettings


def write(tmp_path, data) -> ModelSettings:
    (tmp_path / "framecast.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return ModelSettings.load(tmp_path)


def test_the_built_in_model_carries_the_settings_it_was_tuned_with():
    settings = ModelSettings.load(builtin_model_dir())
    assert settings.train["learning_rate"] == 1e-3 and settings.train["colour_variants"] == 7
    assert settings.propagate == {"guidance_scale": 2.0, "adapter_strength": 0.6}
    assert settings.first_frame_reference and settings.fidelity_threshold == 0.35
    assert settings.presets["fast"]["propagate"]["step_cache"] is StepCache.TAYLORSEER


def test_a_model_without_the_file_keeps_the_methods_defaults(tmp_path):
    settings = ModelSettings.load(tmp_path)
    assert settings.fill("train", "", {}) == {} and settings.fill("propagate", "", {"steps": 3}) == {"steps": 3}
    assert not settings.first_frame_reference and settings.path == ""
    assert settings.fill("train", "fast", {}) == dict(DEFAULT_PRESETS["fast"]["train"])


def test_a_request_overrides_its_preset_which_overrides_the_model():
    settings = ModelSettings.load(builtin_model_dir())
    filled = settings.fill("train", "fast", {"seed": 3, "colour_variants": 2})
    assert filled == {"learning_rate": 1e-3, "steps": 40, "colour_variants": 2, "w_keep": 0.25, "seed": 3}
    with pytest.raises(InvalidInput) as refused:
        settings.fill("propagate", "turbo", {})
    assert refused.value.field == "preset" and "fast" in str(refused.value) and "quality" in str(refused.value)


@pytest.mark.parametrize("data, words", [
    ("{not json", "cannot be read as JSON"),
    ([1, 2], "must hold a JSON object"),
    ({"trian": {}}, "unknown settings ['trian']"),
    ({"train": {"learnig_rate": 1}}, "does not have: ['learnig_rate']"),
    ({"train": {"steps": 2.5}}, "steps 2.5: it must be a whole number"),
    ({"train": {"steps": True}}, "steps True"),
    ({"propagate": {"step_cache": "warp"}}, "step_cache 'warp': it must be one of none, first-block, taylorseer"),
    ({"propagate": {"guidance_scale": "high"}}, "guidance_scale 'high'"),
    ({"fidelity_threshold": 1.5}, "a share between 0 and 1"),
    ({"presets": {"fast": {"train": {"stpes": 3}}}}, "presets.fast.train"),
])  # fmt: skip
def test_a_file_framecast_cannot_take_is_refused_naming_the_key(tmp_path, data, words):
    with pytest.raises(InvalidInput) as refused:
        write(tmp_path, data)
    assert refused.value.field == "model" and words in str(refused.value), str(refused.value)


def test_the_settings_show_as_plain_json(tmp_path):
    shown = write(tmp_path, {"propagate": {"step_cache": "first-block"}}).to_json()
    assert json.loads(json.dumps(shown))["propagate"] == {"step_cache": "first-block"}
    assert shown["file"] == "framecast.json" and set(shown["presets"]) == {"quality", "fast"}
