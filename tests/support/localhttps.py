"""Local HTTPS endpoints for provider tests: a handler that answers JSON, and TLS from a test CA."""

from __future__ import annotations

import json
import socketserver
import ssl
from http.server import BaseHTTPRequestHandler
from typing import Any

import trustme

from emailtoken.model import EmailTokenSpec, parse_spec


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as real token endpoints), quiet, with a JSON answer helper."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def serve_tls(server: socketserver.TCPServer, ca: trustme.CA) -> str:
    """Put TLS with a certificate for 127.0.0.1 from ``ca`` on ``server``'s socket; its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return f"https://127.0.0.1:{server.server_address[1]}"


def provider_spec(provider: str, token_url: str, **extra: Any) -> EmailTokenSpec:
    """A minimal EmailToken spec of ``provider`` ("Microsoft" or "Google") whose token endpoint is
    ``token_url`` (a local server); ``extra`` adds or overrides spec fields."""
    fields: dict[str, Any] = (
        {"provider": "Google", "clientId": "g", "emailAddress": "a@example.com", "services": ["Gmail"]}
        if provider == "Google"
        else {"provider": "Microsoft", "tenantId": "contoso", "clientId": "m", "emailAddress": "a@contoso.com"}
        | {"services": ["IMAP"]}
    )
    return parse_spec({**fields, "clientSecretRef": {"name": "s"}, "tokenUrl": token_url, **extra}, "box")
