"""The command line's token and TLS options and their environment variables, against the real
server with TLS and tokens (certificates made in the test)."""

from __future__ import annotations

import pytest

from framecast.client import cli

from ..server.certs import FULL_TOKEN, READ_TOKEN, make_certificates, write_tokens
from ..server.test_network import running

ENVIRONMENT = ("FRAMECAST_TOKEN", "FRAMECAST_TLS", "FRAMECAST_TLS_CA", "FRAMECAST_TLS_CERT", "FRAMECAST_TLS_KEY")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory, certificates):
    folder = tmp_path_factory.mktemp("secured")
    tokens = write_tokens(folder / "tokens", FULL_TOKEN, f"read:{READ_TOKEN}")
    with running(tiny_model_dir, folder / "data", auth_tokens=str(tokens), tls_cert=str(certificates.server_cert),
                 tls_key=str(certificates.server_key)) as running_server:  # fmt: skip
        yield f"localhost:{running_server.port}"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def test_token_and_tls_ca_by_option(server, certificates, capsys):
    assert cli.main(["info", "--server", server, "--tls-ca", str(certificates.ca), "--token", FULL_TOKEN]) == 0
    out = capsys.readouterr().out
    assert "ready" in out and FULL_TOKEN not in out


def test_token_and_tls_ca_from_the_environment(server, certificates, capsys, monkeypatch):
    monkeypatch.setenv("FRAMECAST_TOKEN", READ_TOKEN)
    monkeypatch.setenv("FRAMECAST_TLS_CA", str(certificates.ca))
    assert cli.main(["jobs", "list", "--server", server]) == 0
    assert cli.main(["adapters", "pin", "some-adapter", "--server", server]) == 2  # a read-only token
    assert "error: PERMISSION_DENIED: PinAdapter changes" in capsys.readouterr().err


def test_no_token_says_how_to_pass_one(server, certificates, capsys):
    assert cli.main(["info", "--server", server, "--tls-ca", str(certificates.ca)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: UNAUTHENTICATED: this server needs a token") and "--token" in err
    assert "$FRAMECAST_TOKEN" in err


def test_plaintext_to_a_tls_server_fails_to_connect(server, capsys, monkeypatch):
    monkeypatch.setenv("FRAMECAST_TOKEN", FULL_TOKEN)
    assert cli.main(["info", "--server", server, "--timeout", "5"]) == 2
    assert "error: UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--tls-cert", "{cert}"], "--tls-key is required with --tls-cert"),
    (["--tls-ca", "/nonexistent/ca.pem"], "--tls-ca: no such file: /nonexistent/ca.pem"),
    (["--token", "two words"], "--token (or $FRAMECAST_TOKEN) must not hold spaces"),
])  # fmt: skip
def test_bad_security_options_are_refused_naming_them(certificates, capsys, argv, message):
    argv = [arg.format(cert=certificates.client_cert) for arg in argv]
    assert cli.main(["info", "--server", "127.0.0.1:1"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
