"""What every framecast command line shares (the client's, ``python -m framecast.server`` and
``python -m framecast.engine.toy``): option value types that refuse what a request could not
carry. argparse only: importing it loads neither torch nor gRPC. (How a server-side command's
outcome becomes an exit code is ``framecast.engine.errors.run_command``.)
"""

from __future__ import annotations

import argparse

UINT32_MAX = 2**32 - 1  # the largest value of the API's uint32 fields (steps, rank, pixels, frame indices)
UINT64_MAX = 2**64 - 1  # ... and of its uint64 fields (seeds)


def whole_number(low: int, high: int, name: str = "whole_number"):
    """An argparse type: a whole number in ``[low, high]``, written plainly (``7`` or ``+7``).
    The bounds are those of the request field the option fills (uint32, uint64) or the option's
    documented range, so a value the request cannot carry is an argparse error naming the
    option (exit 2) before anything is uploaded."""
    wire_limit = high in (UINT32_MAX, UINT64_MAX)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is not None and str(value) == text.strip().lstrip("+") and low <= value <= high:
            return value
        if not wire_limit:
            bounds = f"from {low} to {high}"
        elif value is not None and value > high:
            bounds = f"of at most {high}"
        else:
            bounds = f"of at least {low}"
        raise argparse.ArgumentTypeError(f"must be a whole number {bounds} but got {text!r}")

    parse.__name__ = name
    return parse


_positive_uint32 = whole_number(1, UINT32_MAX, "positive_int")


def positive_int(text: str) -> int:
    """A count that must be at least 1 (and fit the API's uint32). The API reads 0 as "the
    server's default", so a 0 typed on the command line is refused here rather than silently replaced."""
    return _positive_uint32(text)


non_negative_int = whole_number(0, UINT32_MAX, "non_negative_int")  # pixels (--dilate-px), steps (--vae-steps)
def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0 but got {text!r}")
    return value
