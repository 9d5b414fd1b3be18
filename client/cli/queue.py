"""``framecast jobs`` (list, watch, cancel): the server's jobs, queued, running and done.

``watch`` re-attaches to a job (one started with ``--detach``, or whose command was stopped)
with the same progress as the command that started it; a propagation's result is downloaded
with ``--output``, the tracked mask of a region given on the first frame with ``--tracked-mask``.
Stopping a watch (Ctrl-C, ``--timeout``) leaves the job running.
"""

from __future__ import annotations

import sys

import grpc

from framecast.client.cli.args import command_with_actions, connect, output_path, positive_int, resolve_prefix
from framecast.client.cli.jobs import print_result, save_tracked_mask
from framecast.client.cli.masks import tracked_mask_path
from framecast.client.client import JOB_STATES, FramecastClient
from framecast.client.display import format_adapter, format_job_table, job_kind, job_state
from framecast.client.errors import FramecastError
from framecast.client.jobs import accepted, collect_propagation, run_track, run_train
from framecast.client.progress import JobProgress, cancel_job, follow_job
from framecast.v1 import framecast_pb2 as pb

ALL_JOBS = 1_000_000  # ListJobs' limit when a prefix is looked up: every job the server remembers


def resolve_job_id(client: FramecastClient, text: str) -> str:
    """A job id, or a unique start of one."""
    try:
        return client.get_job(text).job_id
    except FramecastError as error:
        if error.code is not grpc.StatusCode.NOT_FOUND:
            raise
    return resolve_prefix(text, [job.job_id for job in client.list_jobs(limit=ALL_JOBS)], "jobs", "JOB_ID")


def cmd_jobs(args) -> int:
    action = args.action or "list"
    watching = action == "watch"
    output = output_path(args.output, "--output") if watching and args.output else None
    frames_dir = output_path(args.frames_dir, "--frames-dir", directory=True) if watching and args.frames_dir else None
    tracked_mask = tracked_mask_path(args) if watching else None
    with connect(args) as client:
        if action == "list":
            print(format_job_table(client.list_jobs(getattr(args, "state", None), getattr(args, "limit", None))))
        elif action == "cancel":
            print(cancel_job(client, resolve_job_id(client, args.job_id)))
        else:
            return _watch(client, resolve_job_id(client, args.job_id), output, frames_dir, tracked_mask, args)
    return 0


def _watch(client: FramecastClient, job_id: str, output, frames_dir, tracked_mask, args) -> int:
    events = client.watch_job(job_id)
    info = accepted(events).accepted
    kind = job_kind(info.kind)
    label = {pb.JOB_KIND_TRAIN: "train", pb.JOB_KIND_TRACK: "track"}.get(info.kind, "propagate")
    print(f"{kind} job {job_id} ({info.adapter or 'base model'}): {job_state(info.state)}", file=sys.stderr)
    progress = JobProgress(label, frames_dir=frames_dir)  # the record shows where the job stands
    # A job that ended before a restart has no events left: the stream ends with its record.
    remaining = _and_record(events, info)
    if info.kind == pb.JOB_KIND_TRAIN:
        print(format_adapter(follow_job(client, run_train, remaining, progress, owned=False)))
    elif info.kind == pb.JOB_KIND_TRACK:
        tracked = follow_job(client, run_track, remaining, progress, owned=False)
        lost = f"; lost in working frames {', '.join(map(str, tracked.lost_frames))}" if tracked.lost_frames else ""
        print(f"tracked mask        {tracked.mask.id} ({tracked.tracker}{lost})")
        progress.tracked = tracked
    else:
        _, result = follow_job(client, collect_propagation, remaining, progress, owned=False)
        print_result(client, result, output, frames_dir, args)
    save_tracked_mask(client, progress.tracked, tracked_mask, args.timeout)
    return 0


class _and_record:
    """The rest of a watch stream, its ``accepted`` record put back in front (so a stream that ends
    there ends as the job did); closable, as ``follow_job`` expects."""

    def __init__(self, events, info: pb.JobInfo):
        self.events, self.info = events, info

    def __iter__(self):
        yield pb.JobEvent(job_id=self.info.job_id, accepted=self.info)
        yield from self.events

    def close(self) -> None:
        self.events.close()


def add_parsers(commands) -> None:
    """Register ``jobs`` with its actions."""
    jobs, add_action = command_with_actions(commands, "jobs", "list, watch or cancel the server's jobs")
    listing = add_action("list", "jobs, newest first, with their state and progress (default)")
    listing.add_argument("--state", choices=list(JOB_STATES), default=None, help="only jobs in this state")
    listing.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N jobs (default: 100)")
    watch = add_action("watch", "follow a job with progress until it ends (it keeps running when you stop watching)")
    watch.add_argument("job_id", metavar="JOB_ID", help="a job id, or a unique start of one")
    watch.add_argument("-o", "--output", default=None, metavar="FILE", help="a propagation's result: download it here")
    watch.add_argument("--frames-dir", default=None, metavar="DIR",
                       help="a propagation: write every frame the server streams as a PNG here")  # fmt: skip
    watch.add_argument("--tracked-mask", default=None, metavar="FILE",
                       help="a job given a region on the first frame: download its tracked mask here")  # fmt: skip
    cancel = add_action("cancel", "stop a job (at its next step) or take it off the queue")
    cancel.add_argument("job_id", metavar="JOB_ID", help="a job id, or a unique start of one")
    jobs.set_defaults(run=cmd_jobs)
