"""Server configuration, checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framecast.engine.errors import InvalidInput
from framecast.engine.model import check_model_dir

MiB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    model_dir: str  # local diffusers directory of a WanImageToVideoPipeline
    data_dir: str  # adapters, media, results and job records live here
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port (the chosen one is reported by the running server)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_queue: int = 16  # queued jobs beyond which Train/Propagate get RESOURCE_EXHAUSTED
    max_upload_bytes: int = 512 * MiB
    max_frames: int = 81
    max_pixels: int = 832 * 480 * 2  # per frame
    max_steps: int = 10_000
    adapter_slots: int = 8  # adapters kept in device memory at once
    adapter_host_cache_gb: float = 4.0  # host memory for adapters off the device
    adapter_max_rank: int = 64  # rank every adapter is zero-padded to on the model
    window_frames: int = 81  # clips longer than this are trained and generated in windows
    quantize: str = "none"  # none | int8 | nf4 | auto
    attention: str = "auto"  # auto | sdpa | xformers
    offload: str = "none"  # none | model | group | auto
    max_vram_gb: float = 0.0  # device memory budget; 0 = none
    vae_tiling: bool = False
    optimizer: str = "adamw"  # adamw | adamw8bit
    grace_s: float = 10.0  # on shutdown: time running jobs get to reach a step boundary
    media_retention_hours: float = 0.0  # uploads and results older than this are deleted; 0 = kept until deleted
    chunk_bytes: int = 1 * MiB  # download/export chunk size
    max_workers: int = 16  # gRPC handler threads (streams in flight)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise InvalidInput("port", self.port, "must be in [0, 65535]")
        if self.max_queue < 1:
            raise InvalidInput("max_queue", self.max_queue, "must be >= 1")
        if self.max_upload_bytes < 1:
            raise InvalidInput("max_upload_bytes", self.max_upload_bytes, "must be >= 1")
        if self.adapter_slots < 1:
            raise InvalidInput("adapter_slots", self.adapter_slots, "must be >= 1")
        if self.adapter_host_cache_gb < 0:
            raise InvalidInput("adapter_host_cache_gb", self.adapter_host_cache_gb, "must be >= 0")
        if not 1 <= self.adapter_max_rank <= 512:
            raise InvalidInput("adapter_max_rank", self.adapter_max_rank, "must be between 1 and 512")
        if self.window_frames and (self.window_frames < 5 or (self.window_frames - 1) % 4):
            raise InvalidInput("window_frames", self.window_frames, "must be 0 (whole clips) or 4N+1 and at least 5")
        if not self.media_retention_hours >= 0:
            raise InvalidInput("media_retention_hours", self.media_retention_hours, "must be >= 0 (0 keeps media until deleted)")
        if not Path(self.model_dir).is_dir():
            raise InvalidInput("model", self.model_dir, "is not a directory")
        check_model_dir(self.model_dir)  # here, not minutes later in the background load

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
