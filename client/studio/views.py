"""What the studio's page sends and is sent: its JSON turned into ``FramecastClient`` arguments, and
the server's messages (media, jobs and their events, plans, results, adapters) turned into JSON.

The page names its fields by what a person sees (``source``, ``region``, ``edited``, ``references``,
``prompt``, ``adapter``, ``preset``); a problem the server reports names a request field
(``mask_prompt.box``, ``references[1].image_id``), and ``page_field`` says where on the page it goes.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format

from framecast.client.display import format_metrics, format_plan, job_kind, job_state, verdict_line
from framecast.v1 import framecast_pb2 as pb

# Request fields (as the server's problems name them, by prefix) -> the page's field they concern.
PAGE_FIELDS = (
    ("source_id", "source"), ("shot", "source"), ("mask_prompt", "region"), ("mask_id", "region"),
    ("mask_mode", "region"), ("dilate_px", "region"), ("edited_first_frame_id", "edited"),
    ("references", "references"), ("prompt", "prompt"), ("preview_prompt", "prompt"), ("adapter", "adapter"),
    ("preset", "preset"), ("steps", "preset"),
)  # fmt: skip
UPLOAD_ROLES = ("source", "edited", "reference", "mask0")  # what an upload is for: its page field


def page_field(request_field: str, message: str = "") -> str:
    """The page's field a problem concerns: by the request field it names, else by the first request
    field its message names; ``run`` when none is known."""
    for name in (request_field, *message.replace(":", " ").split()):
        for prefix, field in PAGE_FIELDS:
            if name == prefix or name.startswith((prefix + ".", prefix + "[")):
                return field
    return "run"


def message_dict(message) -> dict:
    """A protobuf message as JSON-ready values, fields by their proto names, defaults included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def media_json(ref: pb.MediaRef) -> dict:
    data = message_dict(ref)
    data["kind"] = pb.MediaKind.Name(ref.kind).removeprefix("MEDIA_KIND_").lower()
    return data


def job_json(info: pb.JobInfo) -> dict:
    data = message_dict(info)
    data.update(kind=job_kind(info.kind), state=job_state(info.state))
    return data


def result_json(result: pb.PropagateResult) -> dict:
    """A propagation's result: its video, figures and verdict, and both as the command line words them."""
    data = message_dict(result)
    verdict = pb.EditVerdict.Name(result.fidelity.verdict).removeprefix("EDIT_VERDICT_").lower()
    data.update(verdict=verdict, verdict_line=verdict_line(result), metrics_text=format_metrics(result))
    data["video"] = media_json(result.video)
    return data


def tracked_json(tracked: pb.TrackedMask) -> dict:
    return {"mask": media_json(tracked.mask), "lost_frames": list(tracked.lost_frames), "tracker": tracked.tracker}


def event_json(event: pb.JobEvent) -> dict:
    """One of a job's events for the page: ``{"type": <the event's field>, "job_id": ..., ...}``."""
    kind = event.WhichOneof("event")
    data: dict[str, Any] = {"type": kind, "job_id": event.job_id}
    value = getattr(event, kind) if kind else None
    if kind == "accepted":
        data["job"] = job_json(value)
    elif kind == "frame":  # the latest preview frame, as an image the page shows as it is
        data.update(index=value.index, time_s=value.time_s, png="data:image/png;base64," + base64.b64encode(value.png).decode())
    elif kind == "tracked":
        data.update(tracked_json(value))
    elif kind == "result":
        data["result"] = result_json(value)
    elif kind == "adapter":
        data["adapter"] = message_dict(value)
    elif value is not None:  # queued, progress, notice, error
        data.update(message_dict(value))
    return data


def final_of_record(info: pb.JobInfo) -> dict | None:
    """The final event of a job that ended before the server restarted, from its record (a watch of
    it replays only the record); None for a job still going."""
    if info.state == pb.JOB_STATE_SUCCEEDED:
        if info.HasField("propagate_result"):
            return {"type": "result", "job_id": info.job_id, "result": result_json(info.propagate_result)}
        if info.HasField("track_result"):
            return {"type": "tracked", "job_id": info.job_id, **tracked_json(info.track_result)}
        if info.HasField("adapter_result"):
            return {"type": "adapter", "job_id": info.job_id, "adapter": message_dict(info.adapter_result)}
    if info.state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
        return {"type": "error", "job_id": info.job_id, "code": info.error.code, "message": info.error.message}
    return None


def plan_json(kind: str, plan: pb.PlanResponse) -> dict:
    data = message_dict(plan)
    data["text"] = format_plan(kind, plan)
    data["problems"] = [{"field": p.field, "message": p.message, "page_field": page_field(p.field, p.message)}
                        for p in plan.problems]  # fmt: skip
    return data


# ---- what the page sends ---------------------------------------------------------------------------


class PageError(ValueError):
    """A request from the page that cannot be sent; ``field`` is the page's field it concerns."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def region_kwargs(body: dict) -> dict:
    """``box``, ``points`` or ``mask_frame0`` with ``tracker``, as ``FramecastClient`` takes them,
    from the page's ``region``: ``{"box": [x, y, w, h]}``, ``{"points": [[x, y, negative], ...]}``
    or ``{"mask_frame0": media_id}``, in source pixels of frame 0 as displayed."""
    region = body.get("region") or {}
    tracker = body.get("tracker") or None
    if region.get("box"):
        return {"box": tuple(float(v) for v in region["box"]), "tracker": tracker}
    if region.get("points"):
        return {"points": [(float(x), float(y), not negative) for x, y, negative in region["points"]], "tracker": tracker}
    if region.get("mask_frame0"):
        return {"mask_frame0": str(region["mask_frame0"]), "tracker": tracker}
    raise PageError("region", "mark the region on frame 0: draw a box, click points or upload a mask")


def shot_kwargs(body: dict) -> dict:
    shot = body.get("shot") or {}
    number = lambda name: None if shot.get(name) in (None, "") else float(shot[name])  # noqa: E731
    return {"start_s": number("start_s"), "end_s": number("end_s")}


def source_id(body: dict) -> str:
    source = body.get("source")
    if not source:
        raise PageError("source", "upload a clip first")
    return str(source)


def edit_kwargs(body: dict, first_frame_reference: bool) -> tuple[dict, dict]:
    """(train, propagate) keyword arguments of an edit the page describes: the source, its region, the
    edited first frame (also a reference at frame 0 where the model trains that way and the page does
    not say no), edited frames at their indices, the prompts and the preset. The propagation composites
    the output over the source, as ``framecast edit`` does."""
    source, region, shot = source_id(body), region_kwargs(body), shot_kwargs(body)
    edited = body.get("edited")
    if not edited:
        raise PageError("edited", "upload the edited first frame")
    prompt = (body.get("prompt") or "").strip()
    if not prompt:
        raise PageError("prompt", "describe the edited video")
    references = []
    for number, reference in enumerate(body.get("references") or []):
        try:
            references.append((int(reference.get("frame", 0)), str(reference["id"])))
        except (KeyError, TypeError, ValueError):
            raise PageError("references", f"edited frame {number + 1} needs its frame number") from None
    if first_frame_reference and body.get("first_frame_reference", True) and not any(k == 0 for k, _ in references):
        references.insert(0, (0, edited))
    preset = body.get("preset") or None
    train = dict(source_id=source, prompt=(body.get("source_prompt") or "").strip() or prompt, references=references,
                 preset=preset, **region, **shot)  # fmt: skip
    propagate = dict(source_id=source, edited_first_frame_id=edited, prompt=prompt, composite=True, preset=preset,
                     **region, **shot)  # fmt: skip
    return train, propagate
