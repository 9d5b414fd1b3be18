"""What the command line shows: progress bars for a job's event stream, and result summaries."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc

from framecast.client.client import FramecastClient
from framecast.client.errors import FramecastError
from framecast.engine import media
from framecast.v1 import framecast_pb2 as pb

# ---- progress -------------------------------------------------------------------------------


class JobProgress:
    """``on_event`` callback that draws tqdm bars for a job's steps and streamed frames.

    Remembers the job id (for cancelling on Ctrl-C) and, with ``frames_dir``, writes every
    streamed frame there as ``frame_00000.png`` (the server's PNG bytes, untouched).
    """

    def __init__(
        self, label: str, frames_total: int | None = None, frames_dir: Path | None = None, disable: bool | None = None
    ):
        from tqdm import tqdm

        self.label, self.job_id, self.frames_dir = label, "", frames_dir
        self.steps = tqdm(desc=label, unit="step", position=0, leave=True, disable=disable, dynamic_ncols=True)
        self.frames = None
        if frames_total is not None:
            self.frames = tqdm(
                total=frames_total,
                desc="frames",
                unit="frame",
                position=1,
                leave=True,
                disable=disable,
                dynamic_ncols=True,
            )

    def __call__(self, event) -> None:
        kind = event.WhichOneof("event")
        if kind == "accepted":
            self.job_id = event.job_id
        elif kind == "queued":
            self.steps.set_description(f"{self.label} (queued, {event.queued.position} ahead)")
        elif kind == "progress":
            progress = event.progress
            if self.steps.total != progress.total:
                self.steps.total = progress.total
            self.steps.n = progress.step
            self.steps.set_description(f"{self.label} {progress.phase}", refresh=False)
            if progress.phase in ("motion", "appearance"):
                self.steps.set_postfix(loss=f"{progress.loss:.4f}", refresh=False)
            self.steps.refresh()
        elif kind == "frame":
            if self.frames_dir is not None:
                media.atomic_write(self.frames_dir / f"frame_{event.frame.index:05d}.png", event.frame.png)
            if self.frames is not None:
                self.frames.update(1)

    def close(self) -> None:
        self.steps.close()
        if self.frames is not None:
            self.frames.close()

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def follow_job(client: FramecastClient, consume, events, progress: JobProgress, timeout: float | None = None):
    """Run ``consume(events, progress)``. On Ctrl-C cancel the job on the server, say so, then
    re-raise. When the stream's deadline passes (``timeout``, default the client's) cancel the job
    too, so that it does not run on unwatched, and raise FramecastError(DEADLINE_EXCEEDED, "timed
    out after N s; cancelled job <id>"). Cancelling is best effort: the message says what became
    of the job when it could not be cancelled or had already ended."""
    try:
        with progress:
            return consume(events, progress)
    except KeyboardInterrupt:
        events.close()
        if progress.job_id:
            print(cancel_job(client, progress.job_id), file=sys.stderr)
        raise
    except FramecastError as error:
        if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        events.close()
        limit = client.timeout if timeout is None else timeout
        timed_out = f"timed out after {limit:g} s" if limit is not None else "timed out"
        if not progress.job_id:
            raise FramecastError(error.code, f"{timed_out}, before the server named the job") from None
        raise FramecastError(error.code, f"{timed_out}; {cancel_job(client, progress.job_id)}") from None


def cancel_job(client: FramecastClient, job_id: str) -> str:
    """Cancel a job (best effort, 10 s); returns a line saying what became of it."""
    try:
        info = client.cancel_job(job_id, timeout=10)
    except FramecastError as error:
        return f"could not cancel job {job_id}: {error}"
    if info.state == pb.JOB_STATE_SUCCEEDED:
        if info.HasField("propagate_result"):
            return f"job {job_id} had already finished: its result is stored as {info.propagate_result.video.id}"
        if info.HasField("adapter_result"):
            return f"job {job_id} had already finished: adapter {info.adapter_result.name} is stored"
        return f"job {job_id} had already finished"
    if info.state == pb.JOB_STATE_FAILED:
        return f"job {job_id} had already failed: {info.error.code}: {info.error.message}"
    return f"cancelled job {job_id}"


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


def format_metrics(result) -> str:
    metrics = result.metrics
    lines = [
        f"frames              {result.num_frames}",
        f"background PSNR     {metrics.background_psnr_db:.2f} dB",
        f"background SSIM     {metrics.background_ssim:.4f}",
        f"first-frame PSNR    {metrics.first_frame_psnr_db:.2f} dB",
        f"temporal change     {metrics.temporal_change:.2f} (inside the mask, vs the source; 1 = as smooth)",
    ]
    if metrics.windows > 1:
        lines.append(f"seam score          {metrics.seam_score:.2f} over {metrics.windows} windows (1 = invisible)")
    lines.append(f"elapsed             {result.elapsed_s:.1f} s")
    return "\n".join(lines)


def upload_file(client: FramecastClient, path: Path, timeout: float | None):
    ref = client.upload(path, timeout=timeout)
    print(f"uploaded {path.name}: {short_media_id(ref.id)} {ref.num_frames} frame(s) {ref.width}x{ref.height}", file=sys.stderr)
    return ref
