"""What the standard ``grpc.health.v1.Health`` service answers, by service name.

- ``liveness``: SERVING from the moment the port opens until the server stops. The process
  answers; restarting it would not help anything else this reports.
- ``readiness``: SERVING while the server can run jobs: the model is loaded, the job worker
  thread is alive and the device answers (a CUDA device that fell off the bus or hit a sticky
  error does not). Checked every ``interval_s`` on a thread of its own, never inside a probe, so
  a probe is answered at once whatever the device is doing. NOT_SERVING while the model loads,
  when it failed to load, and from the start of a shutdown. Each change is logged with its reason.
- ``""`` and ``framecast.v1.Framecast``: as before, NOT_SERVING until the model has loaded, then
  SERVING until the server stops.

Probes run on health's own threads (``streams.HealthLane``), so they are answered under any load.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)
LIVENESS = "liveness"
READINESS = "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def device_problem(device) -> str | None:
    """Why the engine's device cannot be used now; None when it can (always, on a CPU)."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    try:
        import torch

        torch.cuda.mem_get_info(device)  # a query of the driver: fails on a lost or broken device
    except Exception as error:
        return f"device {device} does not answer: {type(error).__name__}: {str(error).splitlines()[0]}"
    return None


class Health:
    """The health servicer and what sets its statuses. ``loaded`` names the service names whose
    status is "the model is loaded" (``""`` and the Framecast service's)."""

    def __init__(self, loaded: tuple[str, ...], why_not_ready: Callable[[], str | None], interval_s: float = 1.0):
        self.servicer = health.HealthServicer()
        self._loaded_names = loaded
        self._why_not_ready = why_not_ready
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._ready: bool | None = None
        self.servicer.set(LIVENESS, SERVING)
        self.servicer.set(READINESS, NOT_SERVING)
        self.set_loaded(False)

    def set_loaded(self, loaded: bool) -> None:
        for name in self._loaded_names:
            self.servicer.set(name, SERVING if loaded else NOT_SERVING)
        if loaded:
            self.check_readiness()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="framecast-readiness", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.check_readiness()

    def check_readiness(self) -> None:
        try:
            why = "the server is stopping" if self._stopping.is_set() else self._why_not_ready()
        except Exception as error:  # a check that fails says the server is not ready, and why
            why = f"readiness check failed: {type(error).__name__}: {error}"
        ready = why is None
        if ready != self._ready:
            self._ready = ready
            self.servicer.set(READINESS, SERVING if ready else NOT_SERVING)
            if ready:
                log.info("readiness: SERVING")
            elif self._stopping.is_set() or why.startswith("the model is still loading"):
                log.info("readiness: NOT_SERVING: %s", why)
            else:
                log.warning("readiness: NOT_SERVING: %s", why)

    def stopping(self) -> None:
        """A shutdown began: not ready, not loaded; still live."""
        self._stopping.set()
        self.set_loaded(False)
        self.check_readiness()
