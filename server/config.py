"""Server configuration, checked once at start-up: the engine's settings plus the server's own."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from framecast.engine.config import MiB, EngineConfig
from framecast.engine.errors import InvalidInput
from framecast.engine.model import check_model_dir


MAX_MESSAGE_BYTES = 64 * MiB  # the largest gRPC message the server receives or sends
OTEL_ENDPOINT_FROM_ENV = "env"  # otel_endpoint: the exporter reads the standard OTEL_EXPORTER_OTLP_* variables


@dataclass(frozen=True)
class ServerConfig:
    engine: EngineConfig  # the model and how it runs
    data_dir: str  # adapters, media, results and job records live here
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port (the chosen one is reported by the running server)
    max_queue: int = 16  # queued jobs beyond which Train/Propagate get RESOURCE_EXHAUSTED
    max_upload_bytes: int = 512 * MiB
    max_source_pixels: int = 7680 * 4320  # per frame of an upload (8K UHD); the working grid is the model's
    max_duration_s: float = 600.0  # longest video accepted; a job edits all of it or a part (ShotOptions)
    grace_s: float = 10.0  # on shutdown: time running jobs get to reach a step boundary
    media_retention_hours: float = 0.0  # uploads and results older than this are deleted; 0 = kept until deleted
    chunk_bytes: int = 1 * MiB  # download/export chunk size
    max_workers: int = 16  # gRPC threads for unary calls, besides one per stream the cap allows (health has its own)
    max_streams: int = 512  # streaming calls open at once (Train, Propagate, WatchJob, transfers); more: RESOURCE_EXHAUSTED
    # Who may call (server/security.py). A host other than loopback needs TLS and a way to know the
    # caller (tokens, or client certificates), or ``insecure``.
    auth_tokens: str = ""  # file of bearer tokens, one a line ('read:TOKEN' read-only); "" = no tokens needed
    tls_cert: str = ""  # PEM certificate chain the server presents; "" = plaintext
    tls_key: str = ""  # its PEM private key
    tls_client_ca: str = ""  # PEM CA bundle callers' certificates must chain to (mutual TLS); "" = none asked for
    insecure: bool = False  # allow a non-loopback host without TLS and caller authentication
    metrics_port: int | None = None  # Prometheus metrics over HTTP on host:this port; 0 = a free port; None = off
    # OpenTelemetry traces (server/tracing.py, the ``tracing`` extra): the OTLP/gRPC collector spans are
    # sent to (http://host:4317, https:// for TLS; "env": OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT says); "" = off
    otel_endpoint: str = ""
    otel_service_name: str = "framecast"  # the spans' service.name
    otel_exporter: object | None = field(default=None, compare=False, repr=False)  # a SpanExporter instead (tests)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise InvalidInput("port", self.port, "must be in [0, 65535]")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidInput("metrics_port", self.metrics_port, "must be in [0, 65535]")
        if self.metrics_port and self.metrics_port == self.port:
            raise InvalidInput("metrics_port", self.metrics_port, "must differ from the gRPC port")
        if self.max_queue < 1:
            raise InvalidInput("max_queue", self.max_queue, "must be >= 1")
        self._check_tracing()
        if not 1 <= self.max_streams <= 100_000:
            raise InvalidInput("max_streams", self.max_streams, "must be in [1, 100000] (each open stream holds a thread)")
        if self.max_workers < 1:
            raise InvalidInput("max_workers", self.max_workers, "must be >= 1")
        self._check_security()
        if self.max_upload_bytes < 1:
            raise InvalidInput("max_upload_bytes", self.max_upload_bytes, "must be >= 1")
        if not self.max_source_pixels >= 1:
            raise InvalidInput("max_source_pixels", self.max_source_pixels, "must be >= 1")
        if not (self.max_duration_s > 0 and math.isfinite(self.max_duration_s)):
            raise InvalidInput("max_duration_s", self.max_duration_s, "must be a finite number of seconds above 0")
        if not self.media_retention_hours >= 0:
            raise InvalidInput("media_retention_hours", self.media_retention_hours, "must be >= 0 (0 keeps media until deleted)")
        if not Path(self.engine.model_dir).is_dir():
            raise InvalidInput("model", self.engine.model_dir, "is not a directory")
        check_model_dir(self.engine.model_dir)  # here, not minutes later in the background load
        sam2 = self.engine.sam2_checkpoint
        if sam2 and not (Path(sam2) / "config.json").is_file():
            raise InvalidInput("sam2_checkpoint", sam2, "is not a SAM2 video model directory (no config.json): save one "
                               "with transformers' Sam2VideoModel.save_pretrained (docs/masks.md)")  # fmt: skip

    def _check_tracing(self) -> None:
        if not self.otel_service_name.strip():
            raise InvalidInput("otel_service_name", self.otel_service_name, "must not be empty")
        endpoint = self.otel_endpoint
        if not endpoint:
            return
        if endpoint == OTEL_ENDPOINT_FROM_ENV:
            if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
                raise InvalidInput("otel_endpoint", endpoint, "reads OTEL_EXPORTER_OTLP_ENDPOINT (or "
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and neither is set")  # fmt: skip
        else:
            try:
                url = urlsplit(endpoint)
                url.port  # noqa: B018 (raises ValueError for a port that is not a number)
            except ValueError:
                url = None
            if url is None or url.scheme not in ("http", "https") or not url.hostname:
                raise InvalidInput("otel_endpoint", endpoint, "must be the http:// (or https://, TLS) URL of an OTLP/gRPC "
                                   "collector, e.g. http://localhost:4317, or 'env' to read OTEL_EXPORTER_OTLP_ENDPOINT")
        try:  # here, not when the first span is exported
            import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError as error:
            raise InvalidInput("otel_endpoint", endpoint, "needs the tracing extra (opentelemetry-sdk, "
                               f"opentelemetry-exporter-otlp-proto-grpc; {error.name or 'opentelemetry'} is not installed): "
                               "pip install 'framecast[tracing]'") from None  # fmt: skip

    def _check_security(self) -> None:
        for name in ("auth_tokens", "tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise InvalidInput(name, path, "is not a file")
        if bool(self.tls_cert) != bool(self.tls_key):
            given, missing = ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
            raise InvalidInput(missing, "", f"is required with --{given.replace('_', '-')}: TLS needs the certificate "
                               "and its private key")  # fmt: skip
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidInput("tls_client_ca", self.tls_client_ca, "needs --tls-cert and --tls-key: client "
                               "certificates are asked for over TLS")  # fmt: skip
        from framecast.server.security import is_loopback

        if self.insecure or is_loopback(self.host):
            return
        missing = [what for what, there in (("TLS (--tls-cert and --tls-key)", self.tls_cert),
                   ("caller authentication (--auth-tokens, or --tls-client-ca)", self.auth_tokens or self.tls_client_ca))
                   if not there]  # fmt: skip
        if missing:
            raise InvalidInput("host", self.host, f"is reachable from other machines, and this server has no "
                               f"{' and no '.join(missing)}: anyone who reaches the port could read, train and delete "
                               "everything. Give them, or --insecure to serve this way on a network you trust")  # fmt: skip

    @classmethod
    def build(cls, **settings) -> ServerConfig:
        """A config from flat settings, each going where it belongs: the engine's fields (model_dir,
        quantize, window_frames...) to its ``EngineConfig``, the rest to the server's."""
        engine_fields = EngineConfig.field_names()
        engine = EngineConfig(**{k: v for k, v in settings.items() if k in engine_fields})
        return cls(engine=engine, **{k: v for k, v in settings.items() if k not in engine_fields})

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
