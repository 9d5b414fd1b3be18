"""framecast: first-frame edit propagation through video with mask-aware LoRA adapters."""

import logging
import os
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


# framecast loads nothing from a hub: models come from local directories (``local_files_only``). The
# libraries under it may still try, bitsandbytes above all, which asks the Hub for a kernel when it
# is imported on a CPU with AVX512-BF16. Offline mode, set before huggingface_hub is imported, keeps
# every such attempt on this machine; a process that sets HF_HUB_OFFLINE itself keeps its choice.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _BitsandbytesHubKernelNotice(logging.Filter):
    """bitsandbytes, on a CPU with AVX512-BF16, tries at import to fetch an optional fused 4-bit
    CPU kernel from the Hugging Face Hub (``kernels-community/quantization-bitsandbytes``) with the
    ``kernels`` package, and when that fails (offline, the publisher check cannot reach the Hub,
    no build for this torch: bitsandbytes issue #2064) it logs a warning and runs its own bundled
    kernel. bitsandbytes has no setting to skip the attempt (offline mode makes it fail without
    asking the Hub). framecast never loads code or weights
    from a hub and has no use for that kernel, so exactly this record goes to framecast's debug log
    instead of a newcomer's terminal; every other bitsandbytes message passes through."""

    NOTICES = ("Failed to load CPU gemm_4bit_forward from kernels-community",
               "Skipping publisher trust check for ")  # the kernels package's, offline  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.NOTICES):
            logging.getLogger(__name__).debug("bitsandbytes uses its bundled CPU 4-bit kernel: %s", record.getMessage())
            return False
        return True


# Here, not where framecast imports bitsandbytes: diffusers imports it first, whenever it loads a
# pipeline, and the record is logged once, at that import.
for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(_BitsandbytesHubKernelNotice())
