"""Who may call the server: bearer tokens, TLS and mutual TLS (issue 22).

**Tokens** (``serve --auth-tokens FILE``): one token a line; blank lines and lines starting with
``#`` are skipped; ``read:TOKEN`` makes a read-only token, ``TOKEN`` (or ``write:TOKEN``) one that
may do everything. A caller sends ``authorization: Bearer TOKEN`` metadata (``--token``,
``$FRAMECAST_TOKEN``, ``FramecastClient(token=...)``). ``AuthInterceptor`` checks it for every RPC
but health's (a load balancer's probe carries no token); reflection needs a token too (``grpcurl
-H 'authorization: Bearer TOKEN'``). No token or a wrong one: UNAUTHENTICATED; a read-only token
calling an RPC that changes something: PERMISSION_DENIED naming the RPC. Tokens are compared as
SHA-256 digests with ``hmac.compare_digest`` against every token of the file, never logged or
echoed. The file is read again when it changes (its modification time, size or inode, looked
at on each call), without a restart; a new version with a bad line is refused, logged with the
line's number, and the tokens before it stay in force.

**TLS** (``--tls-cert``, ``--tls-key``) and **mutual TLS** (``--tls-client-ca``: callers must
present a certificate that CA signed): ``server_credentials``. A caller with a verified client
certificate, or a token, counts as authenticated (``AuthInterceptor.authenticated``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from framecast.engine.errors import InvalidInput
from framecast.server.errors import log_refusal

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"  # answered without a token
# What a read-only token may call: RPCs that change nothing. Anything else (a new RPC included)
# needs a full token.
READ_ONLY_RPCS = frozenset({
    "GetServerInfo", "Plan", "ListMedia", "DownloadMedia", "GetJob", "ListJobs", "WatchJob", "ListAdapters",
    "GetAdapter", "ExportAdapter",
})  # fmt: skip
READ, WRITE = "read", "write"
MIN_TOKEN_CHARS = 16
HOW_TO_SEND = ("pass it with --token TOKEN or $FRAMECAST_TOKEN (FramecastClient(..., token=...)); it travels as "
               "'authorization: Bearer TOKEN' metadata")  # fmt: skip


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, field: str = "auth_tokens") -> list[tuple[bytes, str]]:
    """(digest, kind) of each token in a tokens file's text. InvalidInput naming ``field`` and the
    line (never the token) for a token that is too short, holds spaces or has an unknown kind."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, colon, token = line.partition(":")
        if not colon or kind not in (READ, WRITE):
            kind, token = WRITE, line
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise InvalidInput(field, f"line {number}", f"must hold one token of at least {MIN_TOKEN_CHARS} characters "
                               "and no spaces, optionally after 'read:' (make one with python -c 'import secrets; "
                               "print(secrets.token_urlsafe(32))')")  # fmt: skip
        tokens.append((_digest(token), kind))
    return tokens


class TokenFile:
    """The tokens of ``path``, read again whenever the file changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._seen = self._stamp()
            self._tokens = parse_tokens(self.path.read_text())
        except OSError as error:
            raise InvalidInput("auth_tokens", str(path), f"cannot be read: {error.strerror or error}") from None
        if not self._tokens:
            raise InvalidInput("auth_tokens", str(path), "holds no tokens: every call would be refused")

    def _stamp(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _current(self) -> list[tuple[bytes, str]]:
        try:
            stamp = self._stamp()
        except OSError:  # being replaced (an editor's rename), or removed: the last tokens stay in force
            return self._tokens
        if stamp == self._seen:
            return self._tokens
        with self._lock:
            if stamp != self._seen:
                self._seen = stamp
                try:
                    self._tokens = parse_tokens(self.path.read_text())
                    log.info("auth tokens: read %d from %s", len(self._tokens), self.path)
                except (OSError, InvalidInput) as error:
                    log.error("auth tokens: %s not read again, the tokens before stay in force: %s", self.path, error)
        return self._tokens

    def kind_of(self, token: str) -> str | None:
        """READ or WRITE for a token of the file; None for any other. Compares with every token."""
        presented, kind = _digest(token), None
        for digest, its_kind in self._current():
            if hmac.compare_digest(presented, digest):
                kind = its_kind
        return kind


def bearer_token(metadata) -> str | None:
    """The token of ``authorization: Bearer TOKEN`` invocation metadata; None without one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def client_certified(context: grpc.ServicerContext) -> bool:
    """Whether the caller presented a client certificate that the server's client CA verified."""
    return bool(context.auth_context().get("x509_common_name") or context.auth_context().get("x509_pem_cert"))


@dataclass(frozen=True)
class _Refusal:
    code: grpc.StatusCode
    message: str


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the caller's token for every RPC but health's. Register it outside the stream cap and
    the error mapping (it answers refusals itself, before anything else runs)."""

    def __init__(self, tokens: TokenFile | None, client_ca: bool):
        self.tokens = tokens
        self.client_ca = client_ca

    def _refusal(self, method: str, metadata) -> _Refusal | None:
        if self.tokens is None or method.startswith(HEALTH_PREFIX):
            return None
        token = bearer_token(metadata)
        if token is None:
            return _Refusal(grpc.StatusCode.UNAUTHENTICATED, f"this server needs a token: {HOW_TO_SEND}")
        kind = self.tokens.kind_of(token)
        if kind is None:
            return _Refusal(grpc.StatusCode.UNAUTHENTICATED, "the token is not one this server accepts (check it, or ask "
                            f"for a new one); {HOW_TO_SEND}")  # fmt: skip
        name = method.rpartition("/")[2]
        if kind == READ and name not in READ_ONLY_RPCS:
            return _Refusal(grpc.StatusCode.PERMISSION_DENIED, f"{name} changes what the server holds; this token is "
                            "read-only ('read:' in the tokens file): use a token without 'read:'")  # fmt: skip
        return None

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        refusal = self._refusal(method, handler_call_details.invocation_metadata)
        if refusal is None:
            return handler

        def refuse(request, context):
            log_refusal(method, refusal.code, refusal.message)  # never the token: the message names none
            context.abort(refusal.code, refusal.message)

        for arity in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            if getattr(handler, arity):
                return handler._replace(**{arity: refuse})
        return handler

    def authenticated(self, context: grpc.ServicerContext) -> bool:
        """Whether the caller proved who it is: a token of the file, or a verified client certificate."""
        if self.client_ca and client_certified(context):
            return True
        token = bearer_token(context.invocation_metadata()) if self.tokens is not None else None
        return token is not None and self.tokens.kind_of(token) is not None


def _pem(path: str, option: str, marker: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InvalidInput(option, path, f"cannot be read: {error.strerror or error}") from None
    if f"-----BEGIN {marker}".encode() not in data:
        raise InvalidInput(option, path, f"is not a PEM file with a '-----BEGIN {marker}' block")
    return data


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS credentials from PEM files (InvalidInput naming the option of one that is not one); with
    ``client_ca`` every caller must present a certificate it signed (mutual TLS)."""
    chain = _pem(cert, "tls_cert", "CERTIFICATE")
    private = _pem(key, "tls_key", "")
    if b"PRIVATE KEY-----" not in private:
        raise InvalidInput("tls_key", key, "is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----' block)")
    roots = _pem(client_ca, "tls_client_ca", "CERTIFICATE") if client_ca else None
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=roots, require_client_auth=roots is not None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches this machine only: every address it resolves to
    is a loopback one. ``0.0.0.0`` and ``::`` (every interface) are not; a name that does not resolve is not."""
    import ipaddress
    import socket

    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def describe_access(tls: bool, client_ca: bool, tokens: bool) -> str:
    """How the port is protected, for the start-up line: 'TLS, client certificates, tokens'."""
    parts = ["TLS" if tls else "plaintext"] + (["client certificates"] if client_ca else [])
    return ", ".join(parts + ["tokens" if tokens else "no tokens"])
