"""A model's recommended settings: ``framecast.json`` beside ``model_index.json``.

Settings tuned for one base model belong with that model, not in one command's defaults: the
built-in toy model trains at ten times Wan's learning rate, with colour variants and the edited
first frame as a reference, and samples at CFG 2 with its adapter at 0.6, where a Wan2.1 14B
keeps the method's own values. A request's unset fields take, in order, its preset's value,
this file's, and the method's (the dataclasses' defaults in ``framecast.common.requests``)::

    {
      "train": {"learning_rate": 0.001, "steps": 200, "colour_variants": 7, "w_keep": 0.25},
      "propagate": {"guidance_scale": 2.0, "adapter_strength": 0.6},
      "first_frame_reference": true,
      "fidelity_threshold": 0.5,
      "presets": {"fast": {"train": {"steps": 40}, "propagate": {"steps": 15}}}
    }

Every key is optional; ``train`` holds ``TrainSettings`` fields, ``propagate`` the scalar fields
of ``PropagateJob``, ``first_frame_reference`` whether ``framecast edit`` trains on the edited
first frame as a reference, ``fidelity_threshold`` the share of the edited pixels a frame must
carry for its edit to count as held (``framecast.engine.quality.fidelity``). A directory without the file
takes the method's defaults and the presets below. A file that cannot be read, or names a
setting framecast does not know, stops the server at start with the key and what to do.

Torch-free: the client reads the same names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from framecast.common.requests import BlendRamp, MaskMode, PropagateJob, StepCache, TrainSettings
from framecast.engine.errors import InvalidInput
from framecast.engine.quality.fidelity import DEFAULT_THRESHOLD

SETTINGS_FILE = "framecast.json"
JOB_KINDS = ("train", "propagate")
# The presets of a model whose file names none: "quality" is the method's defaults, "fast" the speed
# levers that held the toy world's quality gate (docs/benchmarks.md, "Time to an edited clip").
DEFAULT_PRESETS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "quality": {"train": {}, "propagate": {}},
    "fast": {
        "train": {"steps": 20},  # a fifth of the method's 100 motion steps
        "propagate": {"steps": 15, "guidance_steps": 5, "step_cache": "taylorseer", "cache_interval": 2},
    },
}
_PROPAGATE_FIELDS = {f.name for f in dataclasses.fields(PropagateJob)} - {
    "adapter", "source", "mask", "edited_first_frame", "prompt", "negative_prompt", "clip", "accelerator",
}  # fmt: skip
# The preset of a propagation over an accelerator: its own sampling settings (stored with it), over the
# model's "turbo" preset where the model has one.
TURBO = "turbo"
_FIELDS = {"train": {f.name for f in dataclasses.fields(TrainSettings)} - {"betas"}, "propagate": _PROPAGATE_FIELDS}
_ENUMS = {"step_cache": StepCache, "mask_mode": MaskMode, "blend_ramp": BlendRamp}


@dataclass(frozen=True)
class ModelSettings:
    train: Mapping[str, Any] = field(default_factory=dict)
    propagate: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=lambda: DEFAULT_PRESETS)
    first_frame_reference: bool = False
    fidelity_threshold: float = DEFAULT_THRESHOLD
    path: str = ""  # the file read; "" when the model has none (the method's defaults)

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelSettings:
        """The settings of the model in ``model_dir``; InvalidInput naming ``model`` for a file that
        cannot be read or holds a key or value framecast does not take."""
        path = Path(model_dir) / SETTINGS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InvalidInput("model", str(path), f"cannot be read as JSON ({error}): fix or remove it") from None
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, path: str = "") -> ModelSettings:
        where = path or SETTINGS_FILE
        if not isinstance(data, dict):
            raise InvalidInput("model", where, "must hold a JSON object")
        unknown = set(data) - {"train", "propagate", "presets", "first_frame_reference", "fidelity_threshold", "about"}
        if unknown:
            raise InvalidInput("model", where, f"names unknown settings {sorted(unknown)}: framecast takes train, "
                               "propagate, presets, first_frame_reference, fidelity_threshold")  # fmt: skip
        presets = data.get("presets", DEFAULT_PRESETS)
        if not isinstance(presets, dict) or not all(isinstance(p, dict) for p in presets.values()):
            raise InvalidInput("model", where, "has presets that are not an object of {\"train\": {...}, \"propagate\": {...}}")
        threshold = data.get("fidelity_threshold", DEFAULT_THRESHOLD)
        if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise InvalidInput("model", where, f"has fidelity_threshold {threshold!r}: it must be a share between 0 and 1")
        return cls(
            train=_frozen(_checked(data.get("train", {}), "train", f"{where}: train")),
            propagate=_frozen(_checked(data.get("propagate", {}), "propagate", f"{where}: propagate")),
            presets=MappingProxyType({
                name: MappingProxyType({kind: _frozen(_checked(preset.get(kind, {}), kind, f"{where}: presets.{name}.{kind}"))
                                        for kind in JOB_KINDS})
                for name, preset in presets.items()
            }),
            first_frame_reference=bool(data.get("first_frame_reference", False)),
            fidelity_threshold=float(threshold),
            path=path,
        )  # fmt: skip

    def fill(self, kind: str, preset: str, given: Mapping[str, Any], preset_values: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:  # fmt: skip
        """The settings of a ``kind`` ("train" or "propagate") job: ``given`` (what the request set),
        then ``preset_values`` (what stands for ``preset`` beyond the model's: an accelerator's
        sampling settings for ``turbo``), then ``preset``'s values ("" for none), then this
        model's. InvalidInput naming ``preset`` for one this model does not have."""
        if preset and preset not in self.presets and preset_values is None:
            names = ", ".join([*self.presets, TURBO] if TURBO not in self.presets else self.presets)
            raise InvalidInput("preset", preset, f"is not a preset of this model: use one of {names} (turbo with an accelerator)")
        chosen = self.presets[preset][kind] if preset in self.presets else {}
        model = self.train if kind == "train" else self.propagate
        return {**model, **chosen, **(preset_values or {}), **given}

    def to_json(self) -> dict:
        """What GetServerInfo and ``framecast info`` show (enums by their values)."""
        plain = lambda m: {k: getattr(v, "value", v) for k, v in m.items()}  # noqa: E731 (enums by their values)
        return {
            "train": plain(self.train), "propagate": plain(self.propagate),
            "presets": {name: {kind: plain(p[kind]) for kind in JOB_KINDS} for name, p in self.presets.items()},
            "first_frame_reference": self.first_frame_reference, "fidelity_threshold": self.fidelity_threshold,
            "file": Path(self.path).name if self.path else "",
        }  # fmt: skip


def _frozen(values: dict) -> Mapping[str, Any]:
    return MappingProxyType(values)


def _checked(values: Any, kind: str, where: str) -> dict[str, Any]:
    """``values`` of a ``kind`` job's settings: each a field framecast has, of that field's type."""
    if not isinstance(values, dict):
        raise InvalidInput("model", where, "must be a JSON object of settings")
    unknown = sorted(set(values) - _FIELDS[kind])
    if unknown:
        raise InvalidInput("model", where, f"names settings a {kind} job does not have: {unknown} "
                           f"(it has {', '.join(sorted(_FIELDS[kind]))})")  # fmt: skip
    defaults = TrainSettings() if kind == "train" else PropagateJob("", None, None, None, "")
    return {name: _typed(name, value, getattr(defaults, name), where) for name, value in values.items()}


def _typed(name: str, value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of the setting's ``default`` (an enum by its value; None where the default is)."""
    if name in _ENUMS:
        try:
            return _ENUMS[name](value)
        except ValueError:
            choices = ", ".join(e.value for e in _ENUMS[name])
            raise InvalidInput("model", where, f"has {name} {value!r}: it must be one of {choices}") from None
    if value is None and default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # a float, or a number where the default is None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        kind = {bool: "true or false", int: "a whole number"}.get(type(default), "a number")
        raise InvalidInput("model", where, f"has {name} {value!r}: it must be {kind}, as the default {default!r} is")
    return float(value) if isinstance(default, float) else value
