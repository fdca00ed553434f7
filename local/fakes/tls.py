"""Loopback TLS for fake servers: a throwaway CA and a server certificate for 127.0.0.1 / localhost.

Some clients only dial `wss://` (google-genai does for API-key clients), so fakes serve real TLS and
tests trust the throwaway CA, either through `client_context` or the CA file (`SSL_CERT_FILE`).
"""

from __future__ import annotations

import functools
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class LoopbackTLS:
    server_context: ssl.SSLContext  # for the fake server (`websockets.serve(..., ssl=...)`)
    client_context: ssl.SSLContext  # trusts only the throwaway CA; verifies 127.0.0.1 and localhost
    ca_pem: bytes
    ca_path: Path  # the CA as a PEM file, for clients that take a file (SSL_CERT_FILE, httpx verify=)


def make_loopback_tls(directory: Path | None = None) -> LoopbackTLS:
    """A new CA and a server certificate for 127.0.0.1, ::1 and localhost.

    The CA PEM is written to `directory` (a new temporary directory when not given).
    """
    ca = trustme.CA(organization_name="leadqual loopback test CA")
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)

    folder = directory if directory is not None else Path(tempfile.mkdtemp(prefix="leadqual-tls-"))
    folder.mkdir(parents=True, exist_ok=True)
    ca_path = folder / "loopback-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return LoopbackTLS(
        server_context=server, client_context=client, ca_pem=ca.cert_pem.bytes(), ca_path=ca_path
    )


@functools.cache
def shared_loopback_tls() -> LoopbackTLS:
    """One CA per process, for many fakes at once (the benchmark, the local stack)."""
    return make_loopback_tls()
