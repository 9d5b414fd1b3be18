"""framecast's Python client: ``FramecastClient`` and the ``framecast`` command line.

Imports neither torch nor diffusers (grpcio, protobuf, numpy, Pillow, PyAV, tqdm only).
"""

from framecast.client.client import FramecastClient, mask_mode_value, media_chunks, server_address
from framecast.client.errors import FramecastError
from framecast.client.jobs import collect_propagation, run_train, wait_for_result

__all__ = [
    "FramecastClient",
    "FramecastError",
    "collect_propagation",
    "mask_mode_value",
    "media_chunks",
    "run_train",
    "server_address",
    "wait_for_result",
]
