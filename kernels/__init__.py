"""Triton kernels and their PyTorch reference twins (imports torch, and triton when present)."""

from .dispatch import BACKENDS, use_triton
from .masked_loss import (
    MaskedFlowLoss,
    masked_flow_loss,
    masked_flow_loss_from_noise,
    masked_flow_loss_from_noise_reference,
    masked_flow_loss_reference,
)
from .overlap_blend import RAMPS, blend_weights, blend_windows, blend_windows_reference

__all__ = [
    "BACKENDS",
    "RAMPS",
    "MaskedFlowLoss",
    "blend_weights",
    "blend_windows",
    "blend_windows_reference",
    "masked_flow_loss",
    "masked_flow_loss_from_noise",
    "masked_flow_loss_from_noise_reference",
    "masked_flow_loss_reference",
    "use_triton",
]
