"""Progress on the command line: a job's phases (decode, motion, appearance, denoise, encode) and
uploads, with the server's ETA; following a job to its end and cancelling it when the user stops.

On a terminal (stderr) each phase and upload gets a tqdm bar; otherwise (a log file, CI, a pipe)
plain lines such as ``train motion 20/100 loss 0.1234 eta 12s``: one when a phase starts and one
when it ends, and between those one at each tenth done or after ``HEARTBEAT_S`` without one, but
never two within ``MIN_GAP_S`` (a phase of a second says just its start and its end). What a job
says about its inputs comes as lines between them: ``warning: region_lost: ...`` for a notice, and
where the tracked mask of a region given on the first frame is stored.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from framecast.client.client import FramecastClient
from framecast.client.display import format_bytes
from framecast.client.errors import FramecastError
from framecast.common import media
from framecast.v1 import framecast_pb2 as pb

TRAINING_PHASES = ("motion", "appearance")
# What a notice asks of the user, said in the command line's terms (the server's message says it in the API's).
NOTICE_HINTS = {
    "region_moves": "on the command line: --box, --points or --mask-frame0 instead of --mask",
    "box_clipped": "on the command line: --box",
    "box_large": "on the command line: a smaller --box, or --points or --mask-frame0",
}
# What a phase's steps count, said beside them in plain lines: the working frames (Plan's), or the
# output's frames (the source's, in the shot); training and denoising count steps.
PHASE_UNITS = {"decode": "working frames", "mask": "working frames", "encode": "output frames"}
HEARTBEAT_S = 10.0  # plain lines: at most this long without one while a phase runs
MIN_GAP_S = 2.0  # ... and at least this long between two, but for a phase's first and last


def plain_progress(stream=None) -> bool:
    """Whether progress goes out as plain lines: ``stream`` (stderr) is not a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def format_duration(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Throttle:
    """When a plain progress line of a phase is due: its first and last step, and between them at a
    new tenth done or after ``heartbeat_s`` without a line, never within ``min_gap_s`` of the last."""

    def __init__(self, heartbeat_s: float = HEARTBEAT_S, min_gap_s: float = MIN_GAP_S,
                 clock: Callable[[], float] | None = None):  # fmt: skip
        self.heartbeat_s, self.min_gap_s, self.clock = heartbeat_s, min_gap_s, clock or time.monotonic
        self.tenth, self.at, self.ended = -1, None, False

    def due(self, done: int, total: int) -> bool:
        tenth, now = done * 10 // total if total else 0, self.clock()
        last = bool(total) and done >= total
        if self.at is None or (last and not self.ended):
            due = True
        else:
            since = now - self.at
            due = not last and since >= self.min_gap_s and (tenth != self.tenth or since >= self.heartbeat_s)
        if due:
            self.tenth, self.at, self.ended = tenth, now, last
        return due


class _Lines:
    """Plain progress lines: one per ``update`` that is due, with ``detail`` (eta, loss). A phase that
    gives way to the next before its last step (a training's steps count on across its phases)
    still says where it ended."""

    def __init__(self, stream, clock: Callable[[], float] | None = None):
        self.stream, self.clock = stream, clock or time.monotonic
        self.title, self.throttle, self.unsaid = None, Throttle(clock=clock), None

    def update(self, title: str, done: int, total: int, detail: str = "", amount: str = "") -> None:
        if title != self.title:
            if self.unsaid is not None:
                self.note(self.unsaid)
            self.title, self.throttle = title, Throttle(clock=self.clock)
        amount = amount or (f"{done}/{total}" if total else f"{done}")
        line = " ".join(part for part in (title, amount, detail) if part)
        self.unsaid = None if self.throttle.due(done, total) else line
        if self.unsaid is None:
            self.note(line)

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Bars:
    """tqdm bars: a new one (the last left on screen) whenever the title changes."""

    def __init__(self, stream, bytes_unit: bool = False):
        self.stream, self.bytes_unit = stream, bytes_unit
        self.title, self.bar = None, None

    def update(self, title: str, done: int, total: int, detail: str = "", amount: str = "") -> None:
        from tqdm import tqdm

        if title != self.title:
            self.close()
            self.title = title
            # A job's bar shows the server's ETA (in ``detail``); an upload's, tqdm's own from its rate.
            steps_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
            self.bar = tqdm(
                desc=title, total=total or None, file=self.stream, dynamic_ncols=True, leave=True,
                unit="B" if self.bytes_unit else "step", unit_scale=self.bytes_unit, unit_divisor=1024,
                bar_format=steps_format if total and not self.bytes_unit else None,
            )  # fmt: skip
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(detail, refresh=False)
        self.bar.refresh()

    def note(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Silent:
    def update(self, *args, **kwargs) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _display(disable: bool | None, plain: bool | None, stream, bytes_unit: bool = False):
    stream = sys.stderr if stream is None else stream
    if disable:
        return _Silent()
    return _Lines(stream) if (plain_progress(stream) if plain is None else plain) else _Bars(stream, bytes_unit)


class JobProgress:
    """``on_event`` callback showing a job's progress: each phase's steps with the server's ETA
    (and the loss while training), its place in the queue, and (bars only) the streamed frames.

    Remembers the job id (for cancelling on Ctrl-C) and, with ``frames_dir``, writes every
    streamed frame there as ``frame_00000.png`` (the server's PNG bytes, untouched).
    ``plain``: plain lines instead of bars (None: when stderr is not a terminal); ``disable``: nothing;
    ``show_queue=False``: not its place in the queue (an edit's propagation waits for its training).

    A ``notice`` is shown as ``warning: <code>: <message>`` and a ``tracked`` event as where the
    tracked mask is stored (its media id), kept as ``tracked``; ``said`` holds what was shown, and
    is not shown again (an edit's propagation is given its training's).
    """

    def __init__(
        self, label: str, frames_total: int | None = None, frames_dir: Path | None = None, disable: bool | None = None,
        plain: bool | None = None, stream=None, show_queue: bool = True, said: set[str] | None = None,
    ):  # fmt: skip
        self.label, self.job_id, self.frames_dir, self.frames_total = label, "", frames_dir, frames_total
        self.show_queue = show_queue
        self.tracked: pb.TrackedMask | None = None
        self.said = set() if said is None else said
        self.steps = _display(disable, plain, stream)
        self.frames = self.steps if isinstance(self.steps, _Silent) else _display(disable, plain, stream)
        self.frames_seen, self.queued_at = 0, None

    def __call__(self, event: pb.JobEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "accepted":  # the job as it stands: a re-attached one may be well on
            self.job_id = event.job_id
            if event.accepted.state == pb.JOB_STATE_RUNNING and event.accepted.progress.total:
                self._progress(event.accepted.progress)
        elif kind == "queued" and self.show_queue and event.queued.position not in (0, self.queued_at):
            self.queued_at = ahead = event.queued.position
            self.steps.note(f"{self.label} queued: {ahead} job{'s' if ahead != 1 else ''} ahead")
        elif kind == "progress":
            self._progress(event.progress)
        elif kind == "frame":
            if self.frames_dir is not None:
                media.atomic_write(self.frames_dir / f"frame_{event.frame.index:05d}.png", event.frame.png)
            self.frames_seen += 1
            if isinstance(self.frames, _Bars):  # plain lines: the denoise phase says as much
                self.frames.update(f"{self.label} frames", self.frames_seen, self.frames_total or 0)
        elif kind == "notice":
            hint = f" ({NOTICE_HINTS[event.notice.code]})" if event.notice.code in NOTICE_HINTS else ""
            self._say(f"warning: {event.notice.code}: {event.notice.message}{hint}")
        elif kind == "tracked":
            self.tracked = tracked = event.tracked
            lost = f", {len(tracked.lost_frames)} lost" if tracked.lost_frames else ""
            self._say(f"tracked mask {tracked.mask.id} ({tracked.tracker}, {tracked.mask.num_frames} working "
                      f"frames{lost})", key=tracked.mask.id)  # fmt: skip

    def _say(self, line: str, key: str | None = None) -> None:
        """Show ``line`` between the progress lines, unless it (or ``key``) was said already."""
        if (key or line) not in self.said:
            self.said.add(key or line)
            self.steps.note(line)

    def _progress(self, progress: pb.Progress) -> None:
        detail = [f"eta {format_duration(progress.eta_s)}"] if progress.step < progress.total else []
        if progress.phase in TRAINING_PHASES:
            detail.insert(0, f"loss {progress.loss:.4f}")
        unit = PHASE_UNITS.get(progress.phase) if progress.total else None
        amount = f"{progress.step}/{progress.total} {unit}" if unit else ""
        self.steps.update(f"{self.label} {progress.phase}", progress.step, progress.total, " ".join(detail), amount)

    def close(self) -> None:
        self.steps.close()
        self.frames.close()

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class UploadProgress:
    """``on_progress(sent, total)`` of an upload: a bar in bytes (or plain lines) for one file."""

    def __init__(self, name: str, disable: bool | None = None, plain: bool | None = None, stream=None):
        self.title = f"upload {name}"
        self.display = _display(disable, plain, stream, bytes_unit=True)

    def __call__(self, sent: int, total: int) -> None:
        self.display.update(self.title, sent, total, amount=f"{format_bytes(sent)}/{format_bytes(total)}")

    def close(self) -> None:
        self.display.close()


# ---- following a job ------------------------------------------------------------------------


def follow_job(
    client: FramecastClient, consume, events, progress: JobProgress, timeout: float | None = None,
    dependents: Sequence[str] = (), owned: bool = True,
):  # fmt: skip
    """Run ``consume(events, progress)`` and return what it returns.

    A job this command started (``owned``) is cancelled on the server when the user stops it
    (Ctrl-C: said on stderr, then KeyboardInterrupt again) or when the stream's deadline passes
    (``timeout``, default the client's: FramecastError(DEADLINE_EXCEEDED, "timed out after N s;
    cancelled job <id>")), so that it does not run on unwatched; so are ``dependents``, the jobs
    queued after it that need it (an edit's propagation). A job only watched (``owned=False``)
    keeps running, and the message says so. Cancelling is best effort: the message says what
    became of the job when it could not be cancelled or had already ended."""
    try:
        with progress:
            return consume(events, progress)
    except KeyboardInterrupt:
        events.close()
        if progress.job_id:
            print(_let_go(client, progress.job_id, dependents, owned), file=sys.stderr)
        raise
    except FramecastError as error:
        if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        events.close()
        limit = client.timeout if timeout is None else timeout
        timed_out = f"timed out after {limit:g} s" if limit is not None else "timed out"
        if not progress.job_id:
            raise FramecastError(error.code, f"{timed_out}, before the server named the job") from None
        raise FramecastError(error.code, f"{timed_out}; {_let_go(client, progress.job_id, dependents, owned)}") from None


def _let_go(client: FramecastClient, job_id: str, dependents: Sequence[str], owned: bool) -> str:
    if not owned:
        return (f"job {job_id} keeps running: {jobs_command(client, 'watch', job_id)} follows it again, "
                f"{jobs_command(client, 'cancel', job_id)} stops it")  # fmt: skip
    return "; ".join(cancel_job(client, job) for job in (job_id, *dependents))


def jobs_command(client: FramecastClient, action: str, job_id: str) -> str:
    """The command line that watches or cancels a job on this client's server."""
    return f"framecast jobs --server {client.address} {action} {job_id}"


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
