"""framecast: first-frame edit propagation through video with mask-aware LoRA adapters."""

import sys
from pathlib import Path

__version__ = "0.1.0"


def _is_checkout_root(entry: str) -> bool:
    root = Path(entry or ".")
    return (root / "kernels" / "masked_loss.py").is_file() and (root / "proto" / "framecast").is_dir()


# Python run from a framecast source checkout's root (``python -m``, ``python -c``, a REPL or a
# notebook there) has the root on sys.path, and its kernels/ folder (framecast.kernels) would
# shadow the third-party ``kernels`` package that transformers imports when it is installed:
# loading a model would fail. framecast's modules are found by their package name, never from
# the root, so the root comes off the path before anything imports transformers.
sys.path[:] = [entry for entry in sys.path if not _is_checkout_root(entry)]
