"""framecast: first-frame edit propagation through video with mask-aware LoRA adapters."""

__version__ = "0.1.0"
