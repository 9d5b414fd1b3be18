"""What the command line shows: adapters, media, jobs, plans and results as text
(progress is ``framecast.client.progress``'s)."""

from __future__ import annotations

import time

from framecast.v1 import framecast_pb2 as pb

# ---- formatting -------------------------------------------------------------------------


def format_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _when(unix_seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_seconds)) if unix_seconds else "-"


def adapter_state(value: int) -> str:
    """``ADAPTER_STATE_LOADED`` -> ``"loaded"``."""
    return pb.AdapterState.Name(value).removeprefix("ADAPTER_STATE_").lower()


def format_targets(modules) -> str:
    """Target module names, those repeated in every transformer block said once:
    ``blocks.0.attn1.to_q .. blocks.39.attn1.to_q`` -> ``attn1.to_q in blocks 0-39``."""
    blocks: dict[str, list[int]] = {}
    others = []
    for name in modules:
        prefix, index, rest = (name.split(".", 2) + ["", ""])[:3]
        if prefix == "blocks" and index.isdigit() and rest:
            blocks.setdefault(rest, []).append(int(index))
        else:
            others.append(name)
    groups: dict[tuple[int, ...], list[str]] = {}
    for rest, indices in blocks.items():
        groups.setdefault(tuple(sorted(set(indices))), []).append(rest)
    parts = [f"{', '.join(rests)} in {_block_range(indices)}" for indices, rests in groups.items()]
    summary = "; ".join(parts + others)
    return f"{len(modules)} linears: {summary}" if summary else "-"


def _block_range(indices: tuple[int, ...]) -> str:
    if len(indices) > 1 and indices == tuple(range(indices[0], indices[-1] + 1)):
        return f"blocks {indices[0]}-{indices[-1]}"
    return ("blocks " if len(indices) > 1 else "block ") + ", ".join(map(str, indices))


def format_adapter(info) -> str:
    memory = [f"{format_bytes(n)} {where}" for n, where in ((info.device_bytes, "device"), (info.host_bytes, "host")) if n]
    rows = [
        ("adapter", info.name),
        ("state", adapter_state(info.state) + (", pinned" if info.pinned else "") + (", in use" if info.in_use else "")),
        ("base model", info.base_model),
        ("rank", f"{info.rank} (alpha {info.alpha:g})"),
        ("final loss", f"{info.final_loss:.5f}"),
        ("size", format_bytes(info.size_bytes) + (f" on disk; {', '.join(memory)}" if memory else "")),
        ("created", _when(info.created_at)),
        ("last used", _when(info.last_used_at)),
        ("origin", info.origin or "-"),
        ("source", info.source_media_id),
        ("targets", format_targets(info.target_modules)),
    ]
    if info.error:
        rows.insert(2, ("error", info.error))
    if info.changed_parameters:
        rows.append(("changes", f"{info.changed_parameters} base parameters (bias, norm, modulation, outside the blocks)"))
    sampling = [f"{field.name}={value:g}" for field, value in info.sampling.ListFields()]
    if sampling:
        rows.append(("sampling", ", ".join(sampling) + " (as an accelerator: --preset turbo)"))
    for number, dropped in enumerate(info.dropped):
        rows.append(("dropped" if number == 0 else "", dropped))
    if info.training_json:
        rows.append(("training", info.training_json))
    return "\n".join(f"{key:<11} {value}" for key, value in rows)


def format_adapter_table(adapters) -> str:
    if not adapters:
        return "no adapters"
    lines = [f"{'name':<24} {'state':<8} {'rank':>4} {'size':>10}  {'pinned':<6}  last used"]
    for info in adapters:
        pinned = "yes" if info.pinned else "no"
        lines.append(
            f"{info.name:<24} {adapter_state(info.state):<8} {info.rank:>4} {format_bytes(info.size_bytes):>10}  "
            f"{pinned:<6}  {_when(info.last_used_at)}"
        )
    return "\n".join(lines)


def short_media_id(media_id: str) -> str:
    """``sha256:`` and 12 hex digits, then ``...``: how ids are shown; ``framecast media delete``
    takes them back as prefixes."""
    return media_id[:19] + "..."


def format_media_table(listing) -> str:
    """``framecast media``: one line per stored media, newest first, then the total."""
    if not listing.media:
        return "no media"
    lines = [f"{'id':<22} {'kind':<14} {'frames':>6} {'size':>9} {'bytes':>10}  {'stored':<19}  filename"]
    for ref in listing.media:
        kind = pb.MediaKind.Name(ref.kind).removeprefix("MEDIA_KIND_").lower()
        lines.append(
            f"{short_media_id(ref.id):<22} {kind:<14} {ref.num_frames:>6} {f'{ref.width}x{ref.height}':>9} "
            f"{format_bytes(ref.size_bytes):>10}  {_when(ref.created_at):<19}  {ref.filename or '-'}"
        )
    lines.append(f"{len(listing.media)} media, {format_bytes(listing.total_bytes)} in all")
    return "\n".join(lines)


def format_change(change) -> str:
    """One line for a load/unload/pin reply: what was done, the state before and after, evictions."""
    name, after = change.adapter.name, adapter_state(change.adapter.state)
    action = pb.AdapterAction.Name(change.action).removeprefix("ADAPTER_ACTION_").lower()
    if action == "none":
        line = f"{name}: nothing to do ({after}{', pinned' if change.adapter.pinned else ''})"
    else:
        line = f"{name}: {action} ({adapter_state(change.previous_state)} -> {after})"
    if change.evicted:
        line += f"; evicted {', '.join(change.evicted)}"
    return line


def format_metrics(result, command_s: float | None = None, uploads_s: float = 0.0) -> str:
    """A propagation's result: its frames, grid and measures, then its times, each named by what it
    measured: the generation (denoising), the job (reading, generating and writing, after its wait
    in the queue) and (``command_s``) the whole command, uploads included."""
    metrics = result.metrics
    lines = [f"frames              {result.num_frames}"]
    if result.working_width:
        lines.append(f"working grid        {result.working_width}x{result.working_height}, {result.working_frames} frames "
                     f"at {result.working_fps:g} fps")  # fmt: skip
    lines.append(f"edit                {verdict_line(result)}")
    lines += [
        f"background PSNR     {metrics.background_psnr_db:.2f} dB (delivered file vs source, outside the region; "
        f"worst {metrics.background_psnr_worst_db:.2f} dB at frame {metrics.background_psnr_worst_frame})",
        f"background SSIM     {metrics.background_ssim:.4f} (worst {metrics.background_ssim_worst:.4f}, "
        f"{metrics.ssim_frames} frames)",
        f"region              {metrics.region_share:.0%} of the frame on average (most {metrics.region_share_max:.0%})",
        f"first frame         {metrics.first_frame_psnr_inside_db:.2f} dB inside the region, "
        f"{metrics.first_frame_psnr_outside_db:.2f} dB outside (delivered vs the edited first frame)",
        f"temporal change     {metrics.temporal_change:.2f} (inside the mask, vs the source; 1 = as smooth)",
    ]
    if metrics.windows > 1:
        lines.append(f"seam score          {metrics.seam_score:.2f} over {metrics.windows} windows (1 = invisible)")
    lines.append(f"generation          {result.elapsed_s:.1f} s (denoising every window, on the server)")
    if result.job_s:
        lines.append(f"job                 {result.job_s:.1f} s running (reading, generation, writing), "
                     f"{result.queued_s:.1f} s queued")  # fmt: skip
    if command_s is not None:
        lines.append(f"command             {command_s:.1f} s (uploads {uploads_s:.1f} s)")
    return "\n".join(lines)


def verdict_name(value: int) -> str:
    return pb.EditVerdict.Name(value).removeprefix("EDIT_VERDICT_").lower() if value else "unmeasured"


def verdict_line(result) -> str:
    """Whether a propagation's edit held, in words: "held (fidelity mean 0.93, ...)", "FADED from frame 9 ..."."""
    fidelity = result.fidelity
    if not result.HasField("fidelity") or not fidelity.verdict:
        return "not judged (no edited first frame)"
    summary = fidelity.summary
    if fidelity.verdict in (pb.EDIT_VERDICT_FADED, pb.EDIT_VERDICT_GARBLED):
        return summary.replace(verdict_name(fidelity.verdict), verdict_name(fidelity.verdict).upper(), 1)
    return summary


def job_kind(value: int) -> str:
    return pb.JobKind.Name(value).removeprefix("JOB_KIND_").lower()


def job_state(value: int) -> str:
    return pb.JobState.Name(value).removeprefix("JOB_STATE_").lower()


def format_job_table(jobs) -> str:
    """``framecast jobs list``: one line a job, newest first: its id, kind, state, adapter, when it
    was created, and where it is (the phase and step, its place in the queue, or its error)."""
    if not jobs:
        return "no jobs"
    lines = [f"{'id':<16}  {'kind':<9} {'state':<9} {'adapter':<20} {'created':<19}  progress"]
    for info in jobs:
        if info.state == pb.JOB_STATE_QUEUED:
            where = f"{info.queue_position} ahead"
        elif info.error.code:
            where = f"{info.error.code}: {info.error.message}"
        elif info.progress.total:
            where = f"{info.progress.phase} {info.progress.step}/{info.progress.total}"
        else:
            where = "-"
        lines.append(f"{info.job_id:<16}  {job_kind(info.kind):<9} {job_state(info.state):<9} {info.adapter or '-':<20} "
                     f"{_when(info.created_at):<19}  {where}")  # fmt: skip
    return "\n".join(lines)


def format_plan(kind: str, plan) -> str:
    """``framecast plan``: what a train or propagate job would do, then every problem of its request."""
    rows = []
    if plan.width:
        rows.append(("working grid", f"{plan.width}x{plan.height} at {plan.fps:g} fps"))
        padded = f" (run as {plan.padded_frames}, 4N+1)" if plan.padded_frames != plan.num_frames else ""
        rows.append(("working frames", f"{plan.num_frames}{padded}"))
    if plan.source.id:
        source = plan.source
        rate = f" at {source.fps:.3g} fps" if source.fps else ""
        rows.append(("source", f"{source.width}x{source.height}, {source.num_frames} frames{rate}, {source.duration_s:.2f} s"
                     + (", audio" if source.has_audio else "")))  # fmt: skip
    if plan.output_frames:
        rows.append(("output", f"{plan.output_frames} frames, {plan.output_duration_s:.2f} s"))
    if plan.windows:
        spans = ", ".join(f"{w.start}-{w.start + w.frames - 1}" for w in plan.windows)
        rows.append(("windows", f"{len(plan.windows)} ({spans})"))
    ranged = plan.steps_min and plan.steps_min < plan.steps  # automatic steps: somewhere in between
    if plan.steps:
        rows.append(("steps", f"{plan.steps_min}-{plan.steps} (automatic steps)" if ranged else plan.steps))
    if plan.estimated_device_bytes:
        rows.append(("memory", f"{format_bytes(plan.estimated_device_bytes)} (estimated peak on the device)"))
    if plan.windows:
        unknown = f"no estimate until the server has run a {kind} job"
        estimate = f"~{plan.estimated_seconds:.0f} s" if plan.estimated_seconds else unknown
        if ranged and plan.estimated_seconds:
            estimate = f"~{plan.estimated_seconds_min:.0f}-{plan.estimated_seconds:.0f} s"
        rows.append(("time", estimate))
    rows.append(("problems", "none" if not plan.problems else len(plan.problems)))
    lines = [kind] + [f"  {key:<15} {value}" for key, value in rows]
    lines += [f"  - {problem.message.strip()}" for problem in plan.problems]  # each message names its field
    lines += [f"  warning: {notice.code}: {notice.message}" for notice in plan.notices]
    return "\n".join(lines)
