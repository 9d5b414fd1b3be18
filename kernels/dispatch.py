"""Where a kernel runs: its Triton version or its PyTorch reference, decided in one place.

The rule (``use_triton``):
- ``backend="reference"``: always the PyTorch reference.
- ``backend="auto"``: Triton for CUDA tensors when triton imports; the reference on CPU,
  unless ``TRITON_INTERPRET=1`` is set at call time *and* triton was imported with it set,
  in which case Triton's interpreter runs on the CPU tensors (slow, exact; for tests).
- ``backend="triton"``: as "auto" would run Triton, else a RuntimeError saying why.

Triton fixes interpreted-vs-compiled when it is imported (its own ``tl`` helpers are
decorated then), so ``TRITON_INTERPRET=1`` must be in the environment before the first
``import triton`` in the process; setting it later makes CPU calls fall back (auto) or
raise (triton) instead of crashing inside triton.

Kernel modules import ``triton``/``tl`` from here: where triton is missing these are
stubs that let the ``@triton.jit`` definitions import (and never run).
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "triton", "reference")

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
    # Triton's standard library is jit-decorated at import: its type says which mode won.
    TRITON_INTERPRETED = type(tl.zeros).__name__ == "InterpretedFunction"
except ImportError:  # pragma: no cover - exercised only where triton is absent
    HAVE_TRITON = False
    TRITON_INTERPRETED = False

    class _Stub:
        """Stands in for `triton` and `triton.language` so kernel definitions import."""

        constexpr = object

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def autotune(*_, **__):
            return lambda fn: fn

        @staticmethod
        def Config(*args, **kwargs):
            return (args, kwargs)

    triton = tl = _Stub()


def interpret_requested() -> bool:
    """Whether TRITON_INTERPRET asks for the interpreter right now (triton's truthy spellings)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def tuning_configs(configs: list) -> list:
    """Autotune candidates: all of them compiled, only the first under the interpreter."""
    return configs[:1] if TRITON_INTERPRETED else configs


def _why_not_triton(tensors: tuple[torch.Tensor, ...]) -> str | None:
    if not HAVE_TRITON:
        return "triton is not installed"
    devices = sorted({t.device.type for t in tensors})
    if devices == ["cuda"]:
        return None
    if devices != ["cpu"]:
        return f"tensors are on {devices}; Triton runs on CUDA (or on CPU under TRITON_INTERPRET=1)"
    if not interpret_requested():
        return "tensors are on CPU and TRITON_INTERPRET=1 is not set"
    if not TRITON_INTERPRETED:
        return "TRITON_INTERPRET=1 was set after triton was imported; set it before the first import"
    return None


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """True to launch the Triton kernel, False for the PyTorch reference (rule in the module doc)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} but is {backend!r}")
    if backend == "reference":
        return False
    reason = _why_not_triton(tensors)
    if reason is not None and backend == "triton":
        raise RuntimeError(f"backend='triton' cannot run here: {reason}")
    return reason is None
