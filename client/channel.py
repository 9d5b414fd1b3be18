"""The client's channel: plaintext or TLS (mutual TLS with a client certificate), and a bearer token
sent with every call as ``authorization: Bearer TOKEN`` metadata.

The token rides on a channel interceptor rather than gRPC call credentials, which grpcio only
sends over TLS: a server on loopback (or ``serve --insecure``) may ask for tokens too.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import grpc

TOKEN_HEADER = "authorization"


class _Details(
    collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer TOKEN`` to every call's metadata."""

    def __init__(self, token: str):
        self._entry = (TOKEN_HEADER, f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _Details:
        metadata = [entry for entry in (details.metadata or ()) if entry[0] != TOKEN_HEADER] + [self._entry]
        return _Details(details.method, details.timeout, metadata, details.credentials,
                        getattr(details, "wait_for_ready", None), getattr(details, "compression", None))  # fmt: skip

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


def _read(path: str | os.PathLike, argument: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as error:
        raise ValueError(f"{argument}: cannot read {path}: {error.strerror or error}") from None


def open_channel(address: str, options: list[tuple[str, object]], token: str | None = None, tls: bool = False,
                 tls_ca: str | os.PathLike | None = None, tls_cert: str | os.PathLike | None = None,
                 tls_key: str | os.PathLike | None = None) -> grpc.Channel:  # fmt: skip
    """A channel to ``address``: TLS when ``tls`` or any ``tls_*`` is given, the server verified
    against ``tls_ca`` (a PEM bundle; else the system's roots); with ``tls_cert`` and ``tls_key``
    the client presents that certificate (mutual TLS). ``token`` goes with every call. Raises
    ValueError for a certificate without its key (or the reverse), an unreadable file or a token
    with spaces or line breaks (which metadata cannot carry)."""
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together: a client certificate needs its private key")
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ValueError("token must be non-empty, without spaces or line breaks")
    if tls or tls_ca or tls_cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca, "tls_ca") if tls_ca else None,
            private_key=_read(tls_key, "tls_key") if tls_key else None,
            certificate_chain=_read(tls_cert, "tls_cert") if tls_cert else None,
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
