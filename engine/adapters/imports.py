"""Importing a LoRA file as a stored adapter (``formats`` reads it; the store keeps it).

Never touches the transformer: safe from any thread.
"""

from __future__ import annotations

import json
import math

from framecast.engine.adapters.formats import normalise, read_safetensors
from framecast.engine.adapters.keys import ModelLayout
from framecast.engine.adapters.store import AdapterRecord, AdapterStore, check_adapter_name
from framecast.engine.errors import AdapterExists, IncompatibleAdapter, InvalidInput

# An accelerator's sampling settings (``--preset turbo``): name -> (type, lowest, highest).
SAMPLING_SETTINGS = {
    "steps": (int, 1, 1000),
    "guidance_scale": (float, 0.0, 30.0),  # <= 1: no guidance
    "shift": (float, 0.01, 100.0),  # the flow-matching sampler's timestep shift
    "accelerator_strength": (float, 0.0, 2.0),
}


def check_sampling(values: dict, field: str = "sampling") -> dict:
    """An accelerator's sampling settings, each known, typed and within its range; InvalidInput naming
    the first that is not."""
    if not isinstance(values, dict):
        raise InvalidInput(field, values, "must be an object of sampling settings")
    checked = {}
    for name, value in values.items():
        if name not in SAMPLING_SETTINGS:
            raise InvalidInput(f"{field}.{name}", value, f"is not a sampling setting: use {', '.join(SAMPLING_SETTINGS)}")
        kind, lowest, highest = SAMPLING_SETTINGS[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok or not lowest <= value <= highest:
            what = "a whole number" if kind is int else "a number"
            raise InvalidInput(f"{field}.{name}", value, f"must be {what} from {lowest:g} to {highest:g}")
        checked[name] = kind(value)
    return checked


def _object(value, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(field, value, "must be a JSON object")
    return value


def _loss(value) -> float:
    """A recorded final loss: a number, or NaN when the file has none."""
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput("framecast.adapter.final_loss", value, "must be a number") from None


def import_adapter(
    store: AdapterStore, model: ModelLayout, base_model: str, name: str, data: bytes, filename: str = "",
    drop_unsupported: bool = False, sampling: dict | None = None, forget=None,
) -> AdapterRecord:  # fmt: skip
    """Store a LoRA file in any layout ``keys`` reads as adapter ``name``, in the canonical form.
    ``drop_unsupported`` leaves out the entries framecast cannot apply (the record's ``dropped``
    lists them) instead of refusing the file; ``sampling`` is how to sample with it as an
    accelerator (``check_sampling``; a framecast file's own, where it has some and this is None).
    ``forget(name)``: drop anything cached under the name.

    Raises InvalidInput (bad name; not a safetensors file; entries framecast cannot apply; bad
    sampling settings), AdapterExists, IncompatibleAdapter (nothing lands on this model, shapes of
    another architecture, a framecast file made for another base model).
    """
    check_adapter_name(name, "name")
    if store.exists(name):
        raise AdapterExists(name)
    sampling = check_sampling(sampling) if sampling else None
    tensors, metadata = read_safetensors(data)
    lora = normalise(tensors, metadata, model, drop_unsupported=drop_unsupported)
    origin = {}
    if "framecast.adapter" in metadata:
        try:
            origin = json.loads(metadata["framecast.adapter"])
        except ValueError:
            origin = {}
        if not isinstance(origin, dict):
            raise InvalidInput("framecast.adapter", metadata["framecast.adapter"], "must be a JSON object (a framecast "
                               "export's record of the adapter)")  # fmt: skip
    theirs = str(origin.get("base_model", ""))
    if "@" in theirs and theirs.rsplit("@", 1)[1] != base_model.rsplit("@", 1)[1]:
        raise IncompatibleAdapter(f"the file was made for base model {theirs}, the server runs {base_model}")
    if sampling is None:
        sampling = check_sampling(_object(origin.get("sampling"), "framecast.adapter.sampling"), "framecast.adapter.sampling")
    record = AdapterRecord(
        name=name,
        base_model=base_model,
        rank=lora.rank,
        alpha=float(lora.rank),
        target_modules=lora.target_modules,
        training=dict(_object(origin.get("training"), "framecast.adapter.training"), imported_from=filename,
                      imported_layout=lora.layout),  # fmt: skip
        source_media_id=str(origin.get("source_media_id", "")),
        final_loss=_loss(origin.get("final_loss")),
        rank_pattern=lora.rank_pattern,
        origin=f"imported from {lora.layout}",
        dropped=lora.dropped,
        sampling=sampling,
    )
    if forget is not None:
        forget(name)
    return store.save(lora.state_dict, record, replace=False)
