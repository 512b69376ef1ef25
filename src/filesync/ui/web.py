"""The status page for a browser: the same view as the rqt widget, live through server-sent events.

The standard library's ThreadingHTTPServer parses HTTP; this module only routes. No ROS here: the web node hands in
each new view (StatusPage.publish) and an object with retry(id), forget(id) and retry_all() for the actions.

Who may do what:
- a client on this machine (a loopback address) reads without a token;
- a client from another address needs the token for everything (the server refuses to bind to a non-loopback
  address without one, see filesync.config);
- retry and forget always need the token, sent as `Authorization: Bearer <token>` or as the cookie the page sets
  after it was opened once with `?token=<token>`, plus the header X-Filesync-Action (a cross-site form cannot send
  it, so a page elsewhere cannot make the browser act). Without a configured token the page is read-only.
Tokens are compared in constant time and never written to a log (no query string is logged).

Who may connect at all:
- a request must name this server in its Host header (allowed_host_names): a page elsewhere whose name is made to
  resolve to 127.0.0.1 (DNS rebinding) names itself and is answered 421 with no data;
- a connection has request_timeout seconds to send each whole request (head and body), from its opening or from the
  previous answer; an event stream being written to is not cut, since it sends nothing more;
- at most max_connections are served at once, each on a thread of its own; beyond that a connection is answered 503
  by the accepting thread and closed, so it costs no thread.
"""
import hmac
import io
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psutil

log = logging.getLogger("filesync.web")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}
COOKIE = "filesync_token"
ACTION_HEADER = "X-Filesync-Action"
KEEPALIVE = 15.0  # seconds between comment lines on an idle event stream (proxies drop silent connections)
ACTIONS = ("retry", "forget")
REQUEST_TIMEOUT = 10.0  # seconds to send a whole request (web.request_timeout)
MAX_CONNECTIONS = 32  # connections served at once (web.max_connections): a few per browser
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"0.0.0.0", "::", ""}
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
        b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections\n")


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_addresses():
    """This machine's addresses, as a Host header writes them (IPv6 without brackets or zone)."""
    return {address.address.split("%")[0].lower() for addresses in psutil.net_if_addrs().values()
            for address in addresses if address.family in (socket.AF_INET, socket.AF_INET6)}


def allowed_host_names(bind_host, extra=()):
    """The names a request's Host header may give (lower case): the bound address, the loopback names when bound to
    loopback or to every interface, this machine's name when reachable from elsewhere, and `extra`
    (web.allowed_hosts). Bound to every interface, this machine's addresses are allowed too (own_addresses(), asked
    per request since they change)."""
    names = {bind_host.lower()} | {name.lower() for name in extra}
    if is_loopback(bind_host) or bind_host in WILDCARDS:
        names |= LOOPBACK_NAMES
    if not is_loopback(bind_host):
        names.add(socket.gethostname().lower())
    return names


def host_header_name(header):
    """The name in a Host header, lower case, without port or IPv6 brackets ('[::1]:8088' -> '::1'); '' when it
    is not a plain host[:port]."""
    if not header or any(character in header for character in "/@?#\\ \t"):
        return ""
    try:
        split = urlsplit("//" + header)
        name, _port = split.hostname, split.port  # .port raises ValueError for a port that is not a number
    except ValueError:
        return ""
    return name or ""


class StatusPage:
    """The latest view, and a condition the event streams wait on for the next one."""

    def __init__(self):
        self.view = None
        self.version = 0
        self.closed = False
        self._condition = threading.Condition()

    def publish(self, view):
        """A new view (from any thread)."""
        with self._condition:
            self.view, self.version = view, self.version + 1
            self._condition.notify_all()

    def next_view(self, after_version, timeout):
        """(version, view) newer than after_version, or (after_version, None) after timeout or close()."""
        with self._condition:
            self._condition.wait_for(lambda: self.version > after_version or self.closed, timeout)
            if self.version > after_version and not self.closed:
                return self.version, self.view
            return after_version, None

    def close(self):
        """End every event stream."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()


class StatusHandler(BaseHTTPRequestHandler):
    """Routes: GET / (the page), /app.js, /style.css, /api/status (one view), /api/events (server-sent events);
    POST /api/files/<id>/retry, /api/files/<id>/forget, /api/retry-all."""

    server_version = "filesync"
    protocol_version = "HTTP/1.1"

    # -- the connection -------------------------------------------------------------------------------------------
    def setup(self):
        """Reads through a _RequestReader: each request has request_timeout seconds to arrive whole."""
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # writes: a client that reads nothing is dropped
        self.rfile = io.BufferedReader(_RequestReader(self.connection, self.server.request_timeout))

    def handle_one_request(self):
        """One request, within its deadline (a timeout ends the connection: the base class catches it)."""
        self.rfile.raw.deadline = time.monotonic() + self.server.request_timeout
        super().handle_one_request()

    def parse_request(self):
        """The base class's parsing, then the Host check: 421 with no data for a name that is not this server's."""
        if not super().parse_request():
            return False
        if self.server.host_allowed(self.headers.get("Host", "")):
            return True
        self.close_connection = True
        self.send_response(HTTPStatus.MISDIRECTED_REQUEST)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        return False

    # -- who is asking --------------------------------------------------------------------------------------------
    def _given_token(self):
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            return authorization[len("Bearer "):].strip()
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return ""
        return cookie[COOKIE].value if COOKIE in cookie else ""

    def _token_ok(self, given=None):
        token = self.server.token
        given = self._given_token() if given is None else given
        return bool(token) and bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def _may_read(self):
        return is_loopback(self.client_address[0]) or self._token_ok()

    # -- responses ------------------------------------------------------------------------------------------------
    def _send(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status, value):
        self._send(status, json.dumps(value))

    def _refuse_reader(self):
        self._json(HTTPStatus.UNAUTHORIZED, {"error": "this page needs the token from another address: open it "
                                                      "once with ?token=<token>"})

    def _view(self):
        view = dict(self.server.page.view or {})
        view["can_act"] = self._token_ok()
        view["read_only_reason"] = "" if view["can_act"] else (
            "read-only: open the page once with ?token=<token> to retry or forget" if self.server.token
            else "read-only: no web token is configured (web.token_env or web.token_file)")
        return view

    # -- GET ------------------------------------------------------------------------------------------------------
    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/" and "token" in query:  # the page opened with its token: keep it in a cookie, drop it
            given = query["token"][0]             # from the address bar (and from history)
            if not self._token_ok(given):
                return self._json(HTTPStatus.UNAUTHORIZED, {"error": "wrong token"})
            return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", [
                ("Location", "/"), ("Set-Cookie", f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict")])
        if not self._may_read():
            return self._refuse_reader()
        if url.path in FILES:
            name, content_type = FILES[url.path]
            with open(os.path.join(STATIC, name), "rb") as handle:
                return self._send(HTTPStatus.OK, handle.read(), content_type)
        if url.path == "/api/status":
            if self.server.page.view is None:
                return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no /filesync/status yet"})
            return self._json(HTTPStatus.OK, self._view())
        if url.path == "/api/events":
            return self._stream()
        self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})

    do_HEAD = do_GET

    def _stream(self):
        """Server-sent events: one `data:` line with the view each time a new one arrives, until the client goes."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.close_connection = True
        page, version = self.server.page, 0
        try:
            if page.view is not None:
                version = page.version
                self._event(self._view())
            while not page.closed:
                version, view = page.next_view(version, KEEPALIVE)
                if view is None:
                    self.wfile.write(b": still here\n\n")
                else:
                    self._event(self._view())
                self.wfile.flush()
        except OSError:
            pass  # the browser closed the page, or stopped reading for request_timeout seconds

    def _event(self, view):
        self.wfile.write(b"data: " + json.dumps(view).encode() + b"\n\n")
        self.wfile.flush()

    # -- POST -----------------------------------------------------------------------------------------------------
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 16))  # no body is needed; read it so the connection stays usable
        if not self._may_read():
            return self._refuse_reader()
        if not self.server.token:
            return self._json(HTTPStatus.FORBIDDEN, {"error": "read-only: no web token is configured"})
        if not self._token_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "retry and forget need the token"})
        if not self.headers.get(ACTION_HEADER):
            return self._json(HTTPStatus.FORBIDDEN, {"error": f"actions need the {ACTION_HEADER} header"})
        parts = urlsplit(self.path).path.strip("/").split("/")
        actions = self.server.actions
        if parts == ["api", "retry-all"]:
            ok, message = actions.retry_all()
        elif len(parts) == 4 and parts[:2] == ["api", "files"] and parts[2].isdigit() and parts[3] in ACTIONS:
            ok, message = getattr(actions, parts[3])(int(parts[2]))
        else:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
        log.info("web: %s from %s: %s", urlsplit(self.path).path, self.client_address[0], message)
        self._json(HTTPStatus.OK if ok else HTTPStatus.CONFLICT, {"ok": ok, "message": message})

    def log_request(self, code="-", size="-"):
        """Requests go to the debug log without their query string (an opening URL carries the token)."""
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        log.debug("web: %s %s %s -> %s", self.client_address[0], getattr(self, "command", None) or "-", path,
                  getattr(code, "value", code))

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        """Errors (a bad request line, a timeout) go to the debug log cut at the first '?': the request line they may
        quote can carry the token."""
        text = format % args
        if "?" in text:
            text = text.split("?", 1)[0] + "?... (query not logged)"
        log.debug("web: %s %s", self.client_address[0], text)


class _RequestReader(io.RawIOBase):
    """A connection's reads, each given only what is left of the request's deadline: a client that sends nothing, or
    a byte now and then, is cut off at the deadline (a timeout per read alone would let a trickle hold a thread)."""

    def __init__(self, connection, timeout):
        super().__init__()
        self.connection, self.timeout = connection, timeout
        self.deadline = time.monotonic() + timeout

    def readable(self):
        """Yes."""
        return True

    def readinto(self, buffer):
        """Read what has come, waiting at most until the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not complete in time")
        self.connection.settimeout(left)
        try:
            return self.connection.recv_into(buffer)
        finally:
            self.connection.settimeout(self.timeout)


class StatusServer(ThreadingHTTPServer):
    """The page's HTTP server; serve_forever() in a thread, shutdown() to stop.

    allowed_hosts: more names a Host header may give (allowed_host_names); request_timeout: seconds each request has
    to arrive whole; max_connections: connections served at once (more are answered 503 without a thread)."""

    daemon_threads = True  # an open event stream does not hold up shutdown

    def __init__(self, host, port, page, actions, token="", allowed_hosts=(), request_timeout=REQUEST_TIMEOUT,
                 max_connections=MAX_CONNECTIONS):
        if not is_loopback(host) and not token:
            raise ValueError(f"serving on {host} needs a token")  # load_config says so first, with the key
        self.page, self.actions, self.token = page, actions, token
        self.host_names = allowed_host_names(host, allowed_hosts)
        self.any_interface = host in WILDCARDS
        self.request_timeout, self.max_connections = request_timeout, max_connections
        self.connections = 0
        self._connections_lock = threading.Lock()
        super().__init__((host, port), StatusHandler)

    def host_allowed(self, header):
        """True when a Host header names this server (see allowed_host_names)."""
        name = host_header_name(header)
        return bool(name) and (name in self.host_names or (self.any_interface and name in own_addresses()))

    def process_request(self, request, client_address):
        """A thread for the connection, or 503 from this thread when max_connections are served already."""
        with self._connections_lock:
            full = self.connections >= self.max_connections
            if not full:
                self.connections += 1
        if full:
            log.debug("web: %s refused: %d connections are open (web.max_connections)", client_address[0],
                      self.max_connections)
            try:
                request.setblocking(False)  # the accepting thread never waits on a client
                request.send(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_closed()
            raise

    def process_request_thread(self, request, client_address):
        """Serve the connection on its thread; it counts as open until it is closed."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_closed()

    def _connection_closed(self):
        with self._connections_lock:
            self.connections -= 1

    def shutdown(self):
        """Stop serving and end the event streams."""
        self.page.close()
        super().shutdown()
        self.server_close()
