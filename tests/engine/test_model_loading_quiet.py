"""Loading a model prints nothing a newcomer has to wonder about.

Two warnings used to greet every first run, both raised while diffusers imports its Wan pipeline:
transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to
`CLIPImageProcessorPil`" and bitsandbytes' "Failed to load CPU gemm_4bit_forward from
kernels-community" (the latter only on CPUs with AVX512-BF16, where bitsandbytes tries a Hub kernel).
Both fire once per process at import time, so each case runs in a fresh interpreter and checks what
it printed as well as the warnings and log records it raised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from framecast.engine.model import builtin_model_dir

NOISE = ("requires torchvision", "falling back to `CLIPImageProcessorPil`", "kernels-community", "gemm_4bit_forward")

_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, warnings

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(f"{record.name}: {record.getMessage()}")

    # transformers' own logger does not propagate to the root, so it gets the handler too.
    for name in ("", "transformers"):
        logging.getLogger(name).addHandler(Keep(logging.WARNING))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        from framecast.engine.memory.lowvram import Quantize, quantize_pipeline
        from framecast.engine.model import load_pipeline

        pipe = load_pipeline(sys.argv[1])
        if sys.argv[2] == "nf4":
            quantize_pipeline(pipe, Quantize.NF4, torch.float32, "cpu")
    import huggingface_hub.constants

    print(json.dumps({
        "offline": huggingface_hub.constants.HF_HUB_OFFLINE,
        "processor": type(pipe.image_processor).__name__,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "records": records,
    }))
    """
)


def _load_quietly(model_dir, quantize: str, cwd) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("HF_HUB_OFFLINE", None)  # framecast sets it: nothing it loads comes from a hub
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(model_dir), quantize],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def _noise(result: dict) -> list[str]:
    said = [result["stderr"], *result["warnings"], *result["records"]]
    return [line for text in said for line in text.splitlines() if any(word in line for word in NOISE)]


@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_builtin_model_loads_without_noise(quantize, tmp_path):
    result = _load_quietly(builtin_model_dir(), quantize, tmp_path)
    assert _noise(result) == []
    assert result["offline"]  # bitsandbytes' attempt at a Hub kernel never leaves the machine
    assert result["processor"] == "CLIPImageProcessorPil"


def test_a_wan_directory_naming_clip_image_processor_loads_without_noise(tmp_path):
    """Wan2.1-I2V-14B-480P's model_index.json names ``CLIPImageProcessor`` (the name transformers 5
    gives its torchvision backend): without torchvision it loads the PIL one, silently."""
    model_dir = shutil.copytree(builtin_model_dir(), tmp_path / "wan-like")
    index = json.loads((model_dir / "model_index.json").read_text())
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    (model_dir / "model_index.json").write_text(json.dumps(index, indent=2))
    result = _load_quietly(model_dir, "none", tmp_path)
    assert _noise(result) == []
    assert result["processor"].startswith("CLIPImageProcessor")
