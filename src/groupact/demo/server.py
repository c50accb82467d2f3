"""`groupact demo RUN_DIR`: a local page that turns things through a trained model.

A standard-library HTTP server (no web framework to install, nothing fetched: the page, its
script and its style are one file, :file:`page.html`): ``GET /`` is the page, ``GET /api/info``
what it needs to build its controls, ``POST /api/render`` one answer of
:meth:`groupact.demo.app.DemoApp.render`. It answers one request at a time (the model is not
re-entrant; a CPU forward pass is milliseconds for images, a fraction of a second for volumes).

A page the user visits elsewhere must not reach it, so every request is checked before it is
read (docs/GUARANTEES.md):

- ``Host`` must name this server: a loopback name (127.0.0.1, localhost, [::1]) or the
  ``--host`` given, with the bound port (a DNS-rebinding page sends its own name);
- every ``/api/`` request carries the random token of the address the command prints
  (``?token=…`` or the ``X-Groupact-Token`` header; the page passes its own on);
- a POST is ``application/json`` and, when it has an ``Origin``, comes from the page itself;
- bodies are bounded before they are read, and anything malformed is a JSON 4xx with a
  one-line ``error``; the server keeps serving.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from groupact.demo.app import MAX_UPLOAD, DemoApp
from groupact.errors import GroupactError

#: the names a browser on this machine uses for it (what ``Host`` may say by default)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
#: ``--host`` values that listen on every address (then any name may reach it: the token guards)
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: the largest request body read (two uploads as data URLs, and the rest)
MAX_BODY = 2 * MAX_UPLOAD
#: seconds a client may take to send its request before the connection is dropped
CLIENT_TIMEOUT = 30
#: a refused POST's body is still read up to this size, so the client gets the answer (closing
#: a socket with unread data resets it, and the reply can be lost)
DRAIN_LIMIT = 1 << 20
TOKEN_HEADER = "X-Groupact-Token"


class Refused(Exception):
    """A request the server does not answer with content: its HTTP status and why (one line)."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ClientGone(Exception):
    """The client closed the connection before its request was whole: nothing to answer."""


def page_html() -> bytes:
    return resources.files("groupact.demo").joinpath("page.html").read_bytes()


def is_loopback(host: str) -> bool:
    """Whether ``--host`` keeps the page on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_and_port(netloc: str) -> tuple[str, int] | None:
    """``name[:port]`` (``[v6]:port`` too) as (lower-case name, port; 80 when absent), or None
    when it does not parse."""
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    return parts.hostname.lower(), 80 if port is None else port


def host_allowed(netloc: str | None, bound_host: str, port: int) -> bool:
    """Whether a request's ``Host`` names this server: a loopback name or the ``--host`` given
    (any name when it listens on every address) and the port it listens on."""
    parsed = _host_and_port(netloc or "")
    if parsed is None or parsed[1] != port:
        return False
    name = parsed[0]
    bound = bound_host.strip("[]").lower()
    return name in LOOPBACK_NAMES or name == bound or bound in WILDCARD_HOSTS


def token_ok(given: str | None, token: str) -> bool:
    """The request's token against the server's, in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def content_length(headers) -> int:
    """The body's size from ``Content-Length``: one whole number of bytes up to
    :data:`MAX_BODY`, refused otherwise before a byte of the body is read."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not "
                                                  "chunked")
    values = headers.get_all("Content-Length") or []
    if not values:
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
    text = values[0].strip()
    if len(set(v.strip() for v in values)) > 1 or not (text.isascii() and text.isdigit()):
        raise Refused(HTTPStatus.BAD_REQUEST, "Content-Length must be one whole number of "
                                              f"bytes; got {', '.join(values)[:40]!r}")
    if len(text) > 12 or int(text) > MAX_BODY:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                      f"the request is over {MAX_BODY >> 20} MB; send a smaller image")
    return int(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; NaN/Infinity, deep nesting and other values refused."""
    try:
        request = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise Refused(HTTPStatus.BAD_REQUEST, "the request nests too deeply to be a "
                                              "request of this page") from None
    except ValueError as exc:   # also UnicodeDecodeError
        raise Refused(HTTPStatus.BAD_REQUEST, f"the request is not a JSON object: "
                                              f"{' '.join(str(exc).split())[:100]}") from None
    if not isinstance(request, dict):
        raise Refused(HTTPStatus.BAD_REQUEST, "the request is not a JSON object; got "
                                              f"{type(request).__name__}")
    return request


def make_handler(app: DemoApp, bound_host: str, token: str) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    page = page_html()

    class Handler(BaseHTTPRequestHandler):
        server_version = "groupact-demo"
        timeout = CLIENT_TIMEOUT          # a client that stalls mid-request is dropped

        def log_message(self, *_args: Any) -> None:   # quiet: the terminal shows the URL only
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")   # the token stays in the URL
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _checked(self) -> SplitResult:
            """The request's URL, once its Host (and on /api/, its token and Origin) pass."""
            port = self.server.server_address[1]
            if not host_allowed(self.headers.get("Host"), bound_host, port):
                raise Refused(HTTPStatus.FORBIDDEN, "this server answers only requests "
                              "addressed to it (Host 127.0.0.1, localhost or [::1] and its "
                              "port); open the address `groupact demo` printed")
            url = urlsplit(self.path)
            if url.path.startswith("/api/"):
                given = self.headers.get(TOKEN_HEADER) or \
                    (parse_qs(url.query).get("token") or [None])[0]
                if not token_ok(given, token):
                    raise Refused(HTTPStatus.FORBIDDEN, "a missing or wrong token: open the "
                                  "address `groupact demo` printed (it ends in ?token=…)")
                origin = self.headers.get("Origin")
                if origin is not None and origin.lower() != \
                        f"http://{self.headers.get('Host', '')}".lower():
                    raise Refused(HTTPStatus.FORBIDDEN, f"requests from another site "
                                  f"({origin[:60]}) are refused")
            return url

        def _answer(self, route) -> None:
            """Run ``route`` and send what it returns, or the JSON error of a refusal; a client
            that left is let go without a word."""
            self.close_connection = True
            try:
                try:
                    status, body, kind = route(self._checked())
                except Refused as exc:
                    status, kind = exc.status, "application/json"
                    body = json.dumps({"error": exc.message}).encode()
                    self._drain()
                self._send(status, body, kind)
            except (ClientGone, ConnectionError, TimeoutError):
                pass

        def _drain(self) -> None:
            """Read a refused POST's small body that is still unread."""
            if self.command != "POST" or getattr(self, "body_read", False):
                return
            try:
                length = content_length(self.headers)
            except Refused:
                return
            if length <= DRAIN_LIMIT:
                self.rfile.read(length)

        def _get(self, url: SplitResult) -> tuple[int, bytes, str]:
            if url.path in ("/", "/index.html"):
                return HTTPStatus.OK, page, "text/html; charset=utf-8"
            if url.path == "/api/info":
                with lock:
                    return HTTPStatus.OK, json.dumps(app.info()).encode(), "application/json"
            raise Refused(HTTPStatus.NOT_FOUND, f"no such page: {url.path[:60]}")

        def _post(self, url: SplitResult) -> tuple[int, bytes, str]:
            if url.path != "/api/render":
                raise Refused(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path[:60]}")
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              f"a request is application/json; got {kind or 'no type'!r}")
            length = content_length(self.headers)
            body = self.rfile.read(length)
            self.body_read = True
            if len(body) < length:
                raise ClientGone()
            request = parse_json_object(body)
            try:
                with lock:
                    answer = app.render(request)
            except (GroupactError, ValueError, TypeError, OverflowError) as exc:
                raise Refused(HTTPStatus.BAD_REQUEST, " ".join(str(exc).split())) from None
            return HTTPStatus.OK, json.dumps(answer).encode(), "application/json"

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

    return Handler


class DemoServer(ThreadingHTTPServer):
    """The page's HTTP server: its token, and no traceback for a client that hung up."""

    token: str = ""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return        # a client that left mid-request: nothing to answer or report
        super().handle_error(request, client_address)


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 0,
                token: str | None = None) -> DemoServer:
    """The page's server, bound (``port=0``: any free port; ``server.server_address`` says
    which), not yet serving: call ``serve_forever()``. ``token`` (default: a new random one)
    is what every API request must carry; :func:`url_of` puts it in the address."""
    token = token or secrets.token_urlsafe(24)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("DemoServer", (DemoServer,), {"address_family": family})
    try:
        server = server_class((host.strip("[]"), port), make_handler(app, host, token))
    except (OSError, OverflowError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise GroupactError(f"cannot listen on {host}:{port}: {why}; give another --port (or "
                            "--host)") from None
    server.token = token
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    """``http://HOST:PORT/`` of the server as a browser here reaches it (a wildcard address
    as the loopback one)."""
    host, port = server.server_address[:2]
    if host in WILDCARD_HOSTS:
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def url_of(server: DemoServer) -> str:
    """The address to open: the page, with the token the API asks for (as Jupyter prints)."""
    return f"{base_url(server)}?token={server.token}"
