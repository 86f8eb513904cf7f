"""The OpenLineage HTTP endpoint: ``POST /api/v1/lineage`` as Marquez serves it, on a thread.

Producers (the OpenLineage Python/Java clients with an HTTP transport: Airflow, Spark, dbt) post
RunEvents exactly as they emit them; we answer 201 with the run's state, 422 with the bad field
paths, 400 for non-JSON, 413 over the size limit, 401 when an authenticator refuses the
``Authorization`` header. ``GET /api/v1/lineage?nodeId=&depth=&direction=`` returns the graph in
Marquez's shape. Served by http.server on its own thread (stdlib, no asyncio loop to share); the
API server composes it next to the gRPC server with a `GovernanceService`.
"""

from __future__ import annotations

import http.server
import json
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from runink.api import _governance
from runink.schemas import errors

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20
_STATUS = {
    "Invalid": 422,
    "NotFound": 404,
    "Forbidden": 403,
    "Unauthenticated": 401,
    "Unavailable": 503,
}

Authenticator = Callable[[str | None], bool]
"""Given the Authorization header (or None): may this request proceed?"""
Authorizer = Callable[[str | None, str], None]
"""Given the Authorization header and the verb (``create`` for POST, ``get`` for GET): return if
the caller may, raise errors.Unauthenticated / errors.Forbidden otherwise (the API server's
authentication chain and RBAC, on resource ``lineage``)."""
Ingest = Callable[[Any], dict[str, Any]]
"""Store one event (JSON as posted) and return the run's state; raises errors.Invalid."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("lineage http: " + format, *args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: errors.RuninkError) -> None:
        body: dict[str, Any] = {"reason": e.reason, "message": e.message}
        if isinstance(e, errors.Invalid):
            body["errors"] = [fe.to_dict() for fe in e.errors]
        self._send(_STATUS.get(e.reason, 500), body)

    def _authorized(self, verb: str) -> bool:
        header = self.headers.get("Authorization")
        try:
            if self.server.authorize is not None:
                self.server.authorize(header, verb)
                return True
        except errors.RuninkError as e:
            self._error(e)
            return False
        auth = self.server.authenticate
        if auth is None or auth(header):
            return True
        self._error(errors.Unauthenticated("missing or invalid credentials"))
        return False

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") != "/api/v1/lineage":
            self._send(404, {"reason": "NotFound", "message": f"no endpoint {url.path}"})
            return
        if not self._authorized("create"):
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send(413, {"reason": "Invalid", "message": f"body over {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        try:
            event = json.loads(body)
        except ValueError as e:
            self._send(400, {"reason": "Invalid", "message": f"body is not JSON: {e}"})
            return
        try:
            state = self.server.ingest(event)
        except errors.RuninkError as e:
            self._error(e)
            return
        self._send(201, state)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") != "/api/v1/lineage":
            self._send(404, {"reason": "NotFound", "message": f"no endpoint {url.path}"})
            return
        if not self._authorized("get"):
            return
        q = urllib.parse.parse_qs(url.query)
        try:
            node = q.get("nodeId", [""])[0]
            if not node:
                raise errors.Invalid("nodeId is required")
            try:
                depth = int(q.get("depth", ["20"])[0])
            except ValueError as e:
                raise errors.Invalid("depth must be an integer") from e
            graph = self.server.service.lineage(
                node, direction=q.get("direction", ["both"])[0], depth=depth
            )
        except errors.RuninkError as e:
            self._error(e)
            return
        self._send(200, graph)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        addr: tuple[str, int],
        service: _governance.GovernanceService,
        authenticate: Authenticator | None,
        authorize: Authorizer | None = None,
        ingest: Ingest | None = None,
    ) -> None:
        self.service = service
        self.authenticate = authenticate
        self.authorize = authorize
        self.ingest: Ingest = ingest or service.ingest
        super().__init__(addr, _Handler)


class LineageHttpServer:
    """``POST /api/v1/lineage`` on ``host:port`` (port 0: any free one; see ``.port``).

    Use as a context manager, or `start` / `stop`. With ``ssl_context`` it serves HTTPS.
    ``authorize`` (header, verb) replaces ``authenticate`` when given; ``ingest`` replaces
    ``service.ingest`` (the API server passes one that also updates the catalog).
    """

    def __init__(
        self,
        service: _governance.GovernanceService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authenticate: Authenticator | None = None,
        authorize: Authorizer | None = None,
        ingest: Ingest | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._httpd = _Server((host, port), service, authenticate, authorize, ingest)
        self._tls = ssl_context is not None
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        host = host.decode() if isinstance(host, bytes) else host
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host}:{self.port}/api/v1/lineage"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="lineage-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LineageHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Authenticator", "Authorizer", "Ingest", "LineageHttpServer"]
