"""The edit region of train, propagate, edit and plan: a mask (``--mask``) or a region on the shot's
first frame that the server tracks (``--box``, ``--points`` or ``--mask-frame0``, with ``--tracker``),
one of them; and ``--tracked-mask``, where the tracked mask a job reports is downloaded to.

    framecast edit clip.mp4 --box 40,30,64,48 --edited-first-frame e.png --prompt "a red car"
    framecast propagate ... --points "120,80;-10,10" --tracker sam2 --tracked-mask tracked.mp4
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

from framecast.client.cli.args import CliError, existing_file, existing_input, output_path
from framecast.client.requests import TRACKERS

PROMPT_FLAGS = ("--box", "--points", "--mask-frame0")
DASHED_VALUES = ("--box", "--points")  # options whose value may start with a minus (a box off the left, a point off the region)


# ---- option value types ---------------------------------------------------------------------


def _coordinate(text: str) -> float:
    """A pixel coordinate: a finite number >= 0; ValueError otherwise."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(text)
    return value


def box_spec(text: str) -> tuple[float, float, float, float]:
    """``--box X,Y,W,H``: the region's box on the first frame, source pixels as displayed (left, top,
    width, height; width and height above 0). It may hang off the frame on any side (X or Y below
    0: an object entering from the left or the top): the server clips it to the frame and says so."""
    try:
        x, y, width, height = (float(part) for part in text.split(","))
        if not (all(math.isfinite(v) for v in (x, y, width, height)) and width > 0 and height > 0):
            raise ValueError(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be X,Y,W,H: the box's left, top, width and height in source pixels of the first frame (W and "
            f"H above 0; X and Y may be below 0 for a box hanging off the left or top, which the server clips to "
            f"the frame), e.g. 40,30,64,48 or -20,30,64,48; got {text!r}"
        ) from None
    return x, y, width, height


def dashed_values(argv: list[str]) -> list[str]:
    """``--box -20,30,64,48`` as ``--box=-20,30,64,48`` (and ``--points`` alike): argparse takes a
    word starting with a minus for an option, and a box hanging off the left starts with one."""
    joined: list[str] = []
    for word in argv:
        if joined and joined[-1] in DASHED_VALUES and word[:1] == "-" and word[1:2].isdigit():
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def points_spec(text: str) -> list[tuple[float, float] | tuple[float, float, bool]]:
    """``--points "X,Y;X,Y;-X,Y"``: points on the first frame, source pixels as displayed, ``;``
    between them; a leading minus marks a point off the region (``(x, y, False)``); at least one on
    the region. Coordinates are never negative, so the minus cannot be read as a sign."""
    points: list[tuple[float, float] | tuple[float, float, bool]] = []
    try:
        for part in filter(None, (part.strip() for part in text.split(";"))):
            off = part.startswith("-")
            x, y = (_coordinate(value) for value in part.removeprefix("-").split(","))
            points.append((x, y, False) if off else (x, y))
    except ValueError:
        points = []
    if not any(len(point) == 2 for point in points):
        raise argparse.ArgumentTypeError(
            f"must be X,Y;X,Y;-X,Y: points in source pixels of the first frame (at least 0), at least one on the "
            f"region, a leading minus marking one off it, e.g. \"120,80;-10,10\"; got {text!r}"
        )
    return points


# ---- options --------------------------------------------------------------------------------


def add_mask_options(parser: argparse.ArgumentParser, tracked_mask: bool = True) -> None:
    """--mask, or --box / --points / --mask-frame0 (one of them, required), --tracker and
    (``tracked_mask``; a plan writes no file) --tracked-mask."""
    group = parser.add_argument_group(
        "edit region", "a mask, or a region on the first frame that the server tracks through the shot (one of them)"
    )
    region = group.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", metavar="MASK",
                        help="mask video, image or folder of frames, white = edit region; any size of the source's "
                        "aspect")  # fmt: skip
    region.add_argument("--box", type=box_spec, metavar="X,Y,W,H",
                        help="the region's box on the first frame, source pixels: left, top, width, height; it may "
                        "hang off the frame (-20,30,64,48), and is clipped to it")  # fmt: skip
    region.add_argument("--points", type=points_spec, metavar="X,Y;X,Y;-X,Y",
                        help="points on the region on the first frame, source pixels; a leading minus marks a point "
                        "off it (quote the value; put a point on the region first, or write --points=-X,Y;...)")  # fmt: skip
    region.add_argument("--mask-frame0", metavar="IMAGE",
                        help="a mask image of the region on the first frame (any size of the source's aspect)")  # fmt: skip
    group.add_argument("--tracker", choices=list(TRACKERS), default=None,
                       help="what tracks --box, --points or --mask-frame0 through the shot; framecast info lists a "
                       "server's (default: csrt, or sam2 for --points where the server has it)")  # fmt: skip
    if tracked_mask:
        group.add_argument("--tracked-mask", default=None, metavar="FILE",
                           help="write the tracked mask (a mask video at the working frame rate) here, to check it "
                           "or correct it and give it back as --mask")  # fmt: skip


# ---- the region of a command ----------------------------------------------------------------


@dataclass(frozen=True)
class MaskInput:
    """A command's edit region: ``mask`` or ``mask_frame0`` are local paths until uploaded, then
    media ids; ``box`` and ``points`` as the options parsed them."""

    mask: Path | str | None = None
    box: tuple[float, float, float, float] | None = None
    points: list | None = None
    mask_frame0: Path | str | None = None
    tracker: str | None = None

    @classmethod
    def local(cls, args) -> MaskInput:
        """The command's region, its files checked before anything is uploaded. Raises CliError for
        --tracker or --tracked-mask with --mask (a mask is not tracked)."""
        if args.mask is not None:
            for flag, value in (("--tracker", args.tracker), ("--tracked-mask", getattr(args, "tracked_mask", None))):
                if value is not None:
                    raise CliError(f"{flag} needs {', '.join(PROMPT_FLAGS[:-1])} or {PROMPT_FLAGS[-1]}: a --mask is "
                                   "used as it is, not tracked")  # fmt: skip
            return cls(mask=existing_input(args.mask, "--mask"))
        frame0 = existing_file(args.mask_frame0, "--mask-frame0") if args.mask_frame0 is not None else None
        return cls(box=args.box, points=args.points, mask_frame0=frame0, tracker=args.tracker)

    def uploaded(self, upload) -> MaskInput:
        """The region with its files uploaded (``upload``: ``framecast.client.cli.inputs.Uploads``)."""
        mask = upload(self.mask, "--mask").id if self.mask is not None else None
        frame0 = upload(self.mask_frame0, "--mask-frame0").id if self.mask_frame0 is not None else None
        return replace(self, mask=mask, mask_frame0=frame0)

    def kwargs(self) -> dict:
        """``FramecastClient.train``/``propagate`` keyword arguments of the (uploaded) region."""
        return {"mask_id": self.mask, "box": self.box, "points": self.points, "mask_frame0": self.mask_frame0,
                "tracker": self.tracker}  # fmt: skip


def tracked_mask_path(args) -> Path | None:
    """``--tracked-mask``, checked before anything is uploaded."""
    path = getattr(args, "tracked_mask", None)
    return output_path(path, "--tracked-mask") if path is not None else None
