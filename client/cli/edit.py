"""``framecast edit``: train an adapter on a source and propagate an edited first frame through the
source with it, in one command; ``framecast plan``: what an edit (or a training, or a propagation)
would do, and every problem of its requests, without queueing anything.

An edit uploads each input once, plans both jobs (refusing, with every problem of both, before
anything is queued), then submits the training and at once the propagation that uses its adapter:
the server runs them in order, so a detached edit (``--detach``) finishes on its own.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from framecast.client.cli.args import CliError, client_options, connect, existing_file, existing_input, output_path
from framecast.client.cli.inputs import Uploads
from framecast.client.cli.jobs import (
    add_common_options,
    add_propagate_options,
    add_train_options,
    detached,
    local_references,
    output_file,
    print_result,
    propagate_kwargs,
    save_tracked_mask,
    start_job,
    train_kwargs,
)
from framecast.client.cli.masks import MaskInput, add_mask_options, tracked_mask_path
from framecast.client.client import FramecastClient
from framecast.client.display import format_plan, verdict_line
from framecast.client.errors import FramecastError
from framecast.client.jobs import collect_propagation, run_train
from framecast.client.plot import write_fidelity_plot
from framecast.client.progress import JobProgress, cancel_job, follow_job
from framecast.v1 import framecast_pb2 as pb

STRICT_FAILED = 3  # framecast edit --strict's exit status for an edit that did not hold


@dataclass
class EditInputs:
    """An edit's inputs: local paths until uploaded, then media ids."""

    source: Path | str
    mask: MaskInput
    edited_first_frame: Path | str | None
    references: list[tuple[int | float, Path | str]]

    @classmethod
    def local(cls, args, edited: bool = True) -> EditInputs:
        """The command's input paths, checked before anything is uploaded (``edited``: the edited
        first frame is required)."""
        if edited and args.edited_first_frame is None:
            raise CliError("--edited-first-frame is required to plan a propagation")
        return cls(
            existing_input(args.source, "SOURCE"), MaskInput.local(args),
            existing_file(args.edited_first_frame, "--edited-first-frame") if args.edited_first_frame else None,
            local_references(args),
        )  # fmt: skip

    def uploaded(self, upload: Uploads) -> EditInputs:
        source, mask = upload(self.source, "SOURCE").id, self.mask.uploaded(upload)
        edited = upload(self.edited_first_frame, "--edited-first-frame").id if self.edited_first_frame else None
        return EditInputs(source, mask, edited, [(where, upload(path, "--reference").id) for where, path in self.references])


def default_adapter_name() -> str:
    """``edit-`` and 8 hex digits: a fresh adapter name for an edit that names none."""
    return f"edit-{secrets.token_hex(4)}"


def plans(client: FramecastClient, args, media: EditInputs, jobs: tuple[str, ...], adapter: str) -> list:
    """``(kind, PlanResponse)`` of each of ``jobs`` ("train", "propagate") with the command's options.
    An edit's propagation is planned on the base model: its adapter does not exist before its training."""
    planned = []
    for kind in jobs:
        if kind == "train":
            prompt = args.source_prompt or args.prompt
            plan = client.plan_train(adapter, media.source, prompt=prompt, **media.mask.kwargs(),
                                     **train_kwargs(args, media.references, media.edited_first_frame, args.prompt))  # fmt: skip
        else:
            plan = client.plan_propagate(adapter if args.job == "propagate" else "", media.source,
                                         edited_first_frame_id=media.edited_first_frame, prompt=args.prompt,
                                         **media.mask.kwargs(), **propagate_kwargs(args))  # fmt: skip
        planned.append((kind, plan))
    return planned


def distinct_problems(planned: list) -> list[tuple[str, list[str]]]:
    """Each problem of the plans once, with the jobs it concerns, in order: an edit's training and
    propagation share their inputs, so a bad box is a problem of both, and one problem to fix."""
    found: dict[str, list[str]] = {}
    for kind, plan in planned:
        for problem in plan.problems:
            found.setdefault(problem.message.strip(), []).append(kind)
    return list(found.items())


def problems_of(planned: list) -> int:
    return len(distinct_problems(planned))


def cmd_plan(args) -> int:
    jobs = {"edit": ("train", "propagate"), "train": ("train",), "propagate": ("propagate",)}[args.job]
    inputs = EditInputs.local(args, edited="propagate" in jobs)
    adapter = args.adapter or (default_adapter_name() if "train" in jobs else "")
    with connect(args) as client, Uploads(client, args.timeout) as upload:
        media = inputs.uploaded(upload)
        if args.job == "edit":
            media = with_first_frame_reference(client, args, media)
        planned = plans(client, args, media, jobs, adapter)
    print("\n".join(format_plan(kind, plan) for kind, plan in planned))
    if count := problems_of(planned):
        print(f"error: {count} problem{'s' if count > 1 else ''}; framecast {args.job} would be refused", file=sys.stderr)
        return 2
    return 0


def with_first_frame_reference(client: FramecastClient, args, media: EditInputs) -> EditInputs:
    """The edit's inputs with its edited first frame as a reference at frame 0 too, where the server's
    model trains that way (its settings' ``first_frame_reference``) and the command does not say no."""
    if not args.first_frame_reference or media.edited_first_frame is None or any(w == 0 for w, _ in media.references):
        return media
    settings = json.loads(client.server_info(timeout=args.timeout).model_settings_json or "{}")
    if not settings.get("first_frame_reference"):
        return media
    return EditInputs(media.source, media.mask, media.edited_first_frame, [(0, media.edited_first_frame), *media.references])


def cmd_edit(args) -> int:
    started = time.monotonic()
    inputs = EditInputs.local(args)
    output = output_file(args)
    frames_dir = output_path(args.frames_dir, "--frames-dir", directory=True) if args.frames_dir else None
    tracked_mask = tracked_mask_path(args)
    adapter = args.adapter or default_adapter_name()
    if args.fidelity_plot:
        output_path(args.fidelity_plot, "--fidelity-plot")
    with connect(args) as client, Uploads(client, args.timeout) as upload:
        media = with_first_frame_reference(client, args, inputs.uploaded(upload))
        planned = plans(client, args, media, ("train", "propagate"), adapter)
        if problems := distinct_problems(planned):
            every = [kind for kind, _ in planned]
            print("\n".join(f"  - {message}" + ("" if kinds == every else f" ({' and '.join(kinds)} only)")
                            for message, kinds in problems), file=sys.stderr)  # fmt: skip
            count = len(problems)
            raise CliError(f"{count} problem{'s' if count > 1 else ''} (above); nothing was queued")
        grid = planned[1][1]  # the propagation's plan
        windows = len(grid.windows)
        print(f"working grid {grid.width}x{grid.height} at {grid.fps:g} fps, {grid.num_frames} frames in {windows} "
              f"window{'s' if windows > 1 else ''}; adapter {adapter}", file=sys.stderr)  # fmt: skip

        train = client.train(adapter, media.source, prompt=args.source_prompt or args.prompt, **media.mask.kwargs(),
                             **train_kwargs(args, media.references, media.edited_first_frame, args.prompt))  # fmt: skip
        train_id = start_job("train", train)
        try:
            propagate = client.propagate(adapter, media.source, edited_first_frame_id=media.edited_first_frame,
                                         prompt=args.prompt, **media.mask.kwargs(), **propagate_kwargs(args))  # fmt: skip
            propagate_id = start_job("propagate", propagate)
        except (FramecastError, KeyboardInterrupt):  # no training left to run for nothing
            train.close()
            print(cancel_job(client, train_id), file=sys.stderr)
            raise
        if args.detach:
            return detached(client, [("training", train_id), ("propagation", propagate_id)], [train, propagate])

        training = JobProgress("train")
        training.job_id = train_id
        try:
            trained = follow_job(client, run_train, train, training, dependents=(propagate_id,))
        except FramecastError:
            propagate.close()  # it fails on its own: its adapter was not trained
            raise
        print(f"adapter {trained.name} trained (final loss {trained.final_loss:.5f})", file=sys.stderr)
        # Both jobs track the region (the server tracks it once): what the training said is not said again.
        progress = JobProgress("propagate", frames_total=grid.num_frames, frames_dir=frames_dir, show_queue=False,
                               said=training.said)  # fmt: skip
        progress.job_id = propagate_id
        _, result = follow_job(client, collect_propagation, propagate, progress)
        print(f"adapter             {trained.name}")
        print_result(client, result, output, frames_dir, args, started, upload)
        save_tracked_mask(client, progress.tracked or training.tracked, tracked_mask, args.timeout)
    if args.fidelity_plot:
        print(f"fidelity plot       {write_fidelity_plot(args.fidelity_plot, result)}")
    if args.strict and result.fidelity.verdict in (pb.EDIT_VERDICT_FADED, pb.EDIT_VERDICT_GARBLED):
        print(f"error: --strict: the edit {verdict_line(result)}", file=sys.stderr)
        return STRICT_FAILED
    return 0


# ---- options --------------------------------------------------------------------------------


def _edit_options(parser, planning: bool) -> None:
    parser.add_argument("source", metavar="SOURCE", help="source video (any size and frame rate), or a folder of "
                        "PNG/JPEG frames")  # fmt: skip
    parser.add_argument("--edited-first-frame", required=not planning, default=None, metavar="IMAGE",
                        help="the source's first frame, edited; any size of the source's aspect")  # fmt: skip
    parser.add_argument("--prompt", required=True, help="description of the edited video")
    parser.add_argument("--source-prompt", default=None, metavar="TEXT",
                        help="caption of the source video, for the training (default: --prompt)")  # fmt: skip
    parser.add_argument("--adapter", default=None, metavar="NAME",
                        help="name of the adapter the edit trains (default: edit-<8 hex digits>)")  # fmt: skip
    add_mask_options(parser, tracked_mask=not planning)
    add_train_options(parser, "--train-steps")
    add_propagate_options(parser, composite_by_default=True, files=not planning)
    add_common_options(parser, detach=not planning)
    parser.add_argument("--no-first-frame-reference", dest="first_frame_reference", action="store_false",
                        help="train without the edited first frame as a reference, where the model's settings "
                        "would train with it (framecast info shows them)")  # fmt: skip
    if planning:
        return
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with status {STRICT_FAILED} when the edit did not hold (its verdict faded or "
                        "garbled): for scripts and services with nobody looking at each clip")  # fmt: skip
    parser.add_argument("--fidelity-plot", default=None, metavar="PNG",
                        help="write the edit's fidelity curve, frame by frame, as a PNG")


def add_parsers(commands) -> None:
    """Register ``edit`` and ``plan``."""
    edit = commands.add_parser(
        "edit", parents=[client_options()],
        help="train an adapter on a source, then propagate an edited first frame through it, in one command",
    )  # fmt: skip
    _edit_options(edit, planning=False)
    edit.set_defaults(run=cmd_edit, job="edit")

    plan = commands.add_parser(
        "plan", parents=[client_options()],
        help="what an edit (or a train or propagate) would do: working grid, windows, memory, time, every problem",
    )  # fmt: skip
    _edit_options(plan, planning=True)
    plan.add_argument("--job", choices=["edit", "train", "propagate"], default="edit",
                      help="the command to plan: edit (its training and its propagation), train or propagate "
                      "(with --adapter, or the base model) (default: %(default)s)")  # fmt: skip
    plan.set_defaults(run=cmd_plan)
