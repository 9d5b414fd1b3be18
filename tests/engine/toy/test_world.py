"""Tests for the procedural video world: determinism, masks, motion, occlusion, edits."""

from __future__ import annotations

import numpy as np
import pytest

from framecast.engine.toy.world import EditKind, Scene, SceneConfig, make_scene

SEEDS = range(6)


def _centroid(mask: np.ndarray) -> np.ndarray:
    # mask: [H, W] bool -> (x, y)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_same_seed_same_scene():
    config = SceneConfig(frames=9, sprites=3, occlude=True)
    a, b = make_scene(7, config), make_scene(7, config)
    for name in ("source", "edited", "edit_mask", "target_mask", "target_amodal_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.prompt, a.edited_prompt, a.edit, a.target_index, a.sprites) == (
        b.prompt,
        b.edited_prompt,
        b.edit,
        b.target_index,
        b.sprites,
    )


def test_different_seeds_differ():
    scenes = [make_scene(seed) for seed in SEEDS]
    for i, a in enumerate(scenes):
        for b in scenes[i + 1 :]:
            mean_change = np.abs(a.source.astype(np.int16) - b.source.astype(np.int16)).mean()
            assert mean_change > 10, (a.seed, b.seed, mean_change)
    assert len({scene.prompt for scene in scenes}) > 1


@pytest.mark.parametrize("frames, height, width", [(17, 64, 64), (9, 48, 80), (5, 16, 16), (1, 32, 24)])
def test_shapes_and_dtypes(frames, height, width):
    scene = make_scene(3, SceneConfig(frames=frames, height=height, width=width))
    assert scene.source.shape == scene.edited.shape == (frames, height, width, 3)
    assert scene.source.dtype == scene.edited.dtype == np.uint8
    for mask in (scene.edit_mask, scene.target_mask, scene.target_amodal_mask):
        assert mask.shape == (frames, height, width) and mask.dtype == bool
    assert scene.edited_first_frame.shape == (height, width, 3)
    np.testing.assert_array_equal(scene.edited_first_frame, scene.edited[0])
    assert 0 <= scene.target_index < len(scene.sprites) == scene.config.sprites
    assert isinstance(scene, Scene) and scene.prompt and scene.edited_prompt


@pytest.mark.parametrize("seed", SEEDS)
def test_target_visible_in_every_frame_and_moves(seed):
    scene = make_scene(seed)
    assert scene.edit_mask.any(axis=(1, 2)).all()
    assert scene.target_mask.any(axis=(1, 2)).all()
    assert not (scene.target_mask & ~scene.target_amodal_mask).any()  # visible part of the silhouette
    travel = np.linalg.norm(_centroid(scene.target_amodal_mask[-1]) - _centroid(scene.target_amodal_mask[0]))
    assert travel > 5, travel
    steps = [
        np.linalg.norm(_centroid(scene.target_amodal_mask[f + 1]) - _centroid(scene.target_amodal_mask[f]))
        for f in range(scene.config.frames - 1)
    ]
    assert max(steps) > 1.5 * min(steps) + 0.1  # the speed changes along the path


def test_target_scale_changes():
    for seed in SEEDS:
        area = make_scene(seed, SceneConfig(frames=17, height=128, width=128)).target_amodal_mask.sum(axis=(1, 2))
        assert max(area[0], area[-1]) > 1.2 * min(area[0], area[-1]), (seed, area[0], area[-1])


@pytest.mark.parametrize("edit", list(EditKind))
@pytest.mark.parametrize("occlude", [False, True])
def test_edit_changes_inside_mask_only(edit, occlude):
    for seed in SEEDS:
        scene = make_scene(seed, SceneConfig(sprites=3, edit=edit, occlude=occlude))
        assert scene.edit is edit
        outside = ~scene.edit_mask  # background, other sprites and occluders in front of the target
        np.testing.assert_array_equal(scene.edited[outside], scene.source[outside])
        changed = (scene.edited != scene.source).any(axis=-1)
        assert changed[scene.edit_mask].mean() > 0.1, (seed, changed[scene.edit_mask].mean())
        assert changed[0].any()  # the edited first frame shows the edit
        assert scene.edited_prompt != scene.prompt


@pytest.mark.parametrize("edit", list(EditKind))
def test_edit_changes_one_attribute(edit):
    for seed in SEEDS:
        scene = make_scene(seed, SceneConfig(edit=edit))
        before, after = scene.sprites[scene.target_index], scene.edited_target
        changed = {name for name in ("shape", "texture", "colour") if getattr(before, name) != getattr(after, name)}
        assert changed == {{EditKind.RECOLOR: "colour", EditKind.RETEXTURE: "texture", EditKind.RESHAPE: "shape"}[edit]}
        if edit is not EditKind.RESHAPE:  # same silhouette, so the mask is the source's
            np.testing.assert_array_equal(scene.edit_mask, scene.target_mask)


def test_edit_kind_leaves_source_alone():
    scenes = [make_scene(4, SceneConfig(edit=edit)) for edit in EditKind]
    for scene in scenes[1:]:
        np.testing.assert_array_equal(scene.source, scenes[0].source)
        assert scene.prompt == scenes[0].prompt
    assert len({make_scene(seed).edit for seed in range(12)}) > 1  # edit=None draws from the seed


@pytest.mark.parametrize("seed", SEEDS)
def test_occlusion_hides_part_of_the_target(seed):
    scene = make_scene(seed, SceneConfig(frames=17, sprites=2, occlude=True))
    visible = scene.target_mask.sum(axis=(1, 2))
    whole = scene.target_amodal_mask.sum(axis=(1, 2))
    assert (visible < whole).any()
    assert (visible > 0).all()
    assert scene.target_index == len(scene.sprites) - 2  # right behind the occluder


def test_background_pans_or_stays():
    still = make_scene(2, SceneConfig(sprites=1, pan=False))
    free = ~(still.target_amodal_mask[0] | still.target_amodal_mask[1])
    np.testing.assert_array_equal(still.source[0][free], still.source[1][free])
    panning = make_scene(2, SceneConfig(sprites=1, pan=True))
    free = ~(panning.target_amodal_mask[0] | panning.target_amodal_mask[-1])
    assert (panning.source[0][free] != panning.source[-1][free]).any()
    assert "pans" in panning.prompt and "pans" not in still.prompt


def test_single_frame():
    scene = make_scene(0, SceneConfig(frames=1, occlude=True))
    assert scene.source.shape[0] == 1 and scene.edit_mask[0].any()


def test_edit_accepts_its_string_value():
    assert SceneConfig(edit="reshape").edit is EditKind.RESHAPE


@pytest.mark.parametrize(
    "field, value, extra",
    [
        ("frames", 0, {}),
        ("frames", 2.5, {}),
        ("height", 15, {}),
        ("width", 8, {}),
        ("sprites", 0, {}),
        ("sprites", 4, {}),
        ("pan", "yes", {}),
        ("occlude", True, {"sprites": 1}),
        ("edit", "blur", {}),
    ],
)
def test_config_rejects_bad_values(field, value, extra):
    with pytest.raises(ValueError, match=field) as caught:
        SceneConfig(**{field: value, **extra})
    assert str(value) in str(caught.value) or field == "occlude"


@pytest.mark.parametrize("seed", [-1, 1.5, "3"])
def test_make_scene_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        make_scene(seed)


@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize("occlude", [False, True])
def test_a_higher_frame_rate_shows_the_same_motion_with_frames_in_between(seed, occlude):
    """fps_multiple 2: 33 frames of the motion 17 frames show, every second frame that clip's exactly
    (what a 32 fps source worked at 16 fps is compared with)."""
    slow = make_scene(seed, SceneConfig(frames=17, sprites=2, occlude=occlude))
    fast = make_scene(seed, SceneConfig(frames=33, sprites=2, occlude=occlude, fps_multiple=2))
    for name in ("source", "edited", "edit_mask", "target_mask"):
        np.testing.assert_array_equal(getattr(fast, name)[::2], getattr(slow, name), err_msg=name)
    assert not np.array_equal(fast.source[1], fast.source[0])  # the frames in between are new ones
    with pytest.raises(ValueError, match="multiple of fps_multiple"):
        SceneConfig(frames=18, fps_multiple=2)
