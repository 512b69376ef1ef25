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
Tokens are compared in constant time and never written to a log.
"""
import hmac
import ipaddress
import json
import logging
import os
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("filesync.web")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}
COOKIE = "filesync_token"
ACTION_HEADER = "X-Filesync-Action"
KEEPALIVE = 15.0  # seconds between comment lines on an idle event stream (proxies drop silent connections)
ACTIONS = ("retry", "forget")


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser closed the page

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
        log.info("web: %s from %s: %s", self.path, self.client_address[0], message)
        self._json(HTTPStatus.OK if ok else HTTPStatus.CONFLICT, {"ok": ok, "message": message})

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        """Requests go to the debug log without their query string (an opening URL carries the token)."""
        log.debug("web: %s %s -> %s", self.client_address[0], urlsplit(self.path).path, args[1] if len(args) > 1
                  else "")


class StatusServer(ThreadingHTTPServer):
    """The page's HTTP server; serve_forever() in a thread, shutdown() to stop."""

    daemon_threads = True  # an open event stream does not hold up shutdown

    def __init__(self, host, port, page, actions, token=""):
        if not is_loopback(host) and not token:
            raise ValueError(f"serving on {host} needs a token")  # load_config says so first, with the key
        self.page, self.actions, self.token = page, actions, token
        super().__init__((host, port), StatusHandler)

    def shutdown(self):
        """Stop serving and end the event streams."""
        self.page.close()
        super().shutdown()
        self.server_close()
