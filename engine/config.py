"""How an engine is set up (``EngineConfig``) and what it reports about itself (``EngineInfo``).

Torch-free, so the CLI can offer the same choices without the server's dependencies. Every
choice is a ``str`` Enum: a string from a command line or a test is turned into its member
once, here, and an unknown one is refused naming the setting and the choices.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields

from framecast.engine.errors import InvalidInput
from framecast.engine.method.windows import is_frame_count

GiB = 1 << 30
MiB = 1 << 20


class Quantize(str, enum.Enum):
    NONE = "none"
    INT8 = "int8"
    NF4 = "nf4"
    AUTO = "auto"  # configuration only: the least that fits ``max_vram_gb``, chosen at load


class Offload(str, enum.Enum):
    NONE = "none"
    MODEL = "model"  # whole components visit the device when they run
    GROUP = "group"  # the transformer's blocks stream through the device
    AUTO = "auto"  # configuration only, as Quantize.AUTO


class Attention(str, enum.Enum):
    AUTO = "auto"  # xformers where its kernels load for this torch and device, else SDPA
    SDPA = "sdpa"
    XFORMERS = "xformers"


class Optimizer(str, enum.Enum):
    ADAMW = "adamw"
    ADAMW8BIT = "adamw8bit"  # bitsandbytes


class Dtype(str, enum.Enum):
    AUTO = "auto"  # bfloat16 on CUDA, float32 on the CPU
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


def choice(kind: type[enum.Enum], value, field_name: str):
    """``value`` (a member or its string) as a member of ``kind``; InvalidInput naming ``field_name``
    and the choices otherwise."""
    try:
        return kind(value)
    except ValueError:
        names = [member.value for member in kind]
        raise InvalidInput(field_name, value, f"must be {', '.join(names[:-1])} or {names[-1]}") from None


def concrete(kind: type[enum.Enum]) -> list:
    """The members of a memory choice that name a setting, without AUTO, least aggressive first."""
    return [member for member in kind if member.value != "auto"]


def check_window_frames(window_frames: int, field_name: str = "window_frames") -> None:
    """0 (never cut a clip) or a 4N+1 window of at least 5 frames."""
    if window_frames and (window_frames < 5 or not is_frame_count(window_frames)):
        raise InvalidInput(field_name, window_frames, "must be 0 (whole clips) or 4N+1 and at least 5")


@dataclass(frozen=True)
class EngineConfig:
    model_dir: str
    device: str = "auto"  # auto: cuda when available, else cpu; or cpu, cuda, cuda:N
    dtype: Dtype = Dtype.AUTO
    max_frames: int = 81  # per clip
    max_pixels: int = 832 * 480 * 2  # per frame
    max_steps: int = 10_000
    adapter_slots: int = 8  # adapters kept in device memory at once (LRU; pinned ones never evicted)
    adapter_host_cache_gb: float = 4.0  # host memory for adapters off the device (LRU)
    adapter_max_rank: int = 64  # rank of the hot-swap slot every adapter is zero-padded to
    accelerator: str = ""  # the adapter held under every propagation's that names none (a step-distill LoRA); "": none
    window_frames: int = 81  # clips longer than this are generated/trained in windows; 0: never
    quantize: Quantize = Quantize.NONE
    attention: Attention = Attention.AUTO
    offload: Offload = Offload.NONE
    vae_tiling: bool = False  # decode in spatial tiles (less memory, frames no longer stream per latent frame)
    gradient_checkpointing: bool = True
    optimizer: Optimizer = Optimizer.ADAMW
    max_vram_gb: float = 0.0  # memory budget for planning; 0 = none
    reference_size: tuple[int, int] = field(default=(480, 832))  # (height, width) ``auto`` is planned for
    sam2_checkpoint: str = ""  # a local SAM2 video model directory (transformers' Sam2VideoModel); "": none

    def __post_init__(self):
        for name, kind in (("dtype", Dtype), ("quantize", Quantize), ("attention", Attention),
                           ("offload", Offload), ("optimizer", Optimizer)):  # fmt: skip
            object.__setattr__(self, name, choice(kind, getattr(self, name), name))
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InvalidInput("device", self.device, "must be auto, cpu, cuda or cuda:N")
        if self.adapter_slots < 1:
            raise InvalidInput("adapter_slots", self.adapter_slots, "must be >= 1")
        if not (math.isfinite(self.adapter_host_cache_gb) and self.adapter_host_cache_gb >= 0):
            raise InvalidInput("adapter_host_cache_gb", self.adapter_host_cache_gb, "must be a finite number >= 0")
        if not 1 <= self.adapter_max_rank <= 512:
            raise InvalidInput("adapter_max_rank", self.adapter_max_rank, "must be between 1 and 512")
        check_window_frames(self.window_frames)
        if not (math.isfinite(self.max_vram_gb) and self.max_vram_gb >= 0):
            raise InvalidInput("max_vram_gb", self.max_vram_gb, "must be a finite number >= 0")
        if "auto" in (self.quantize, self.offload) and not self.max_vram_gb:
            raise InvalidInput("max_vram_gb", self.max_vram_gb, "must be set when quantize or offload is auto")

    @property
    def planning_frames(self) -> int:
        """Frames ``auto`` memory settings are planned for: a window of at most 13 frames (a longer
        clip is cut into windows that fit), or with ``window_frames`` 0, which never cuts a clip,
        the longest clip the server accepts."""
        return min(self.window_frames, 13) if self.window_frames else self.max_frames

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded engine is and holds; the names are ``ServerInfo``'s fields."""

    model: str  # base model id: "<model dir name>@<architecture hash>"
    model_dir: str
    dtype: str
    device: str
    quantization: str  # the setting in force (never auto)
    attention_backend: str
    offload: str
    max_vram_bytes: int
    vae_tiling: bool
    gradient_checkpointing: bool
    optimizer: str
    memory_bytes: int  # device memory in use (CPU: model parameter bytes)
    max_frames: int
    max_pixels: int
    window_frames: int
    adapters_loaded: tuple[str, ...]
    adapters_cached: tuple[str, ...]
    adapters_pinned: tuple[str, ...]
    adapter_device_slots: int
    adapter_host_cache_bytes: int
    adapter_slot_rank: int
    native_width: int  # the model's limits (framecast.engine.footage.grid.ModelLimits)
    native_height: int
    max_side: int
    max_window_frames: int
    size_factor: int
    model_settings_json: str = ""  # the model's recommended settings (framecast.engine.model_settings), as JSON
