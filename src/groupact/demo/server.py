"""`groupact demo RUN_DIR`: a local page that turns things through a trained model.

A standard-library HTTP server (no web framework to install, nothing fetched: the page, its
script and its style are one file, :file:`page.html`): ``GET /`` is the page, ``GET /api/info``
what it needs to build its controls, ``POST /api/render`` one answer of
:meth:`groupact.demo.app.DemoApp.render`. It listens on 127.0.0.1 unless told otherwise, and
answers one request at a time (the model is not re-entrant; a CPU forward pass is milliseconds
for images, a fraction of a second for volumes).
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from groupact.demo.app import MAX_UPLOAD, DemoApp
from groupact.errors import GroupactError


def page_html() -> bytes:
    return resources.files("groupact.demo").joinpath("page.html").read_bytes()


def make_handler(app: DemoApp) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    page = page_html()

    class Handler(BaseHTTPRequestHandler):
        server_version = "groupact-demo"

        def log_message(self, *_args: Any) -> None:   # quiet: the terminal shows the URL only
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif self.path == "/api/info":
                with lock:
                    self._json(HTTPStatus.OK, app.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/api/render":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > 2 * MAX_UPLOAD:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
                return
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "the request is not a JSON object"})
                return
            try:
                with lock:
                    answer = app.render(request)
            except (GroupactError, ValueError, TypeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._json(HTTPStatus.OK, answer)

    return Handler


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The page's server, bound (``port=0``: any free port; ``server.server_address`` says
    which), not yet serving: call ``serve_forever()``."""
    try:
        return ThreadingHTTPServer((host, port), make_handler(app))
    except OSError as exc:
        raise GroupactError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; give "
                            "another --port") from None


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
