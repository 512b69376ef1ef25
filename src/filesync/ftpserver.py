"""The bundled FTP server (pyftpdlib): serves a directory to configured users, no anonymous access."""
import logging
import os
import secrets
import socket

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import AsyncChat
from pyftpdlib.servers import FTPServer

from filesync.errors import ConfigError
from filesync.options import expand_path, resolve_secret

log = logging.getLogger(__name__)


def ensure_password_file(path):
    """Create `path` with a random password (mode 600) if it does not exist, so the default setup has no fixed one."""
    path = expand_path(path)
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(18) + "\n")
    log.info("wrote a new FTP password to %s", path)


def build_server(settings, ioloop=None):
    """An FTPServer for the checked `ftp_server` settings of the config (not yet serving), on `ioloop` (default:
    pyftpdlib's one per process; servers served from different threads each need their own)."""
    root = expand_path(settings["root"])
    os.makedirs(root, exist_ok=True)
    authorizer = DummyAuthorizer()
    for index, user in enumerate(settings["users"]):
        if user.get("password_file"):
            ensure_password_file(user["password_file"])
        password = resolve_secret(user, f"ftp_server.users[{index}]")
        if not password:
            raise ConfigError(f"ftp_server.users[{index}]: user {user['name']} has no password")
        authorizer.add_user(user["name"], password, root, perm=user.get("perm", "elradfmwMT"))
    handler = type("FilesyncFTPHandler", (FTPHandler,), {})
    handler.authorizer = authorizer
    handler.permit_foreign_addresses = False
    handler.banner = "filesync FTP server ready."
    if settings.get("passive_ports"):
        handler.passive_ports = range(settings["passive_ports"][0], settings["passive_ports"][1] + 1)
    return FTPServer((settings["host"], settings["port"]), handler, ioloop=ioloop)


class _Waker(AsyncChat):
    """One end of a socket pair in the server's IO loop: a byte from the other end calls `on_wake` in the loop."""

    def __init__(self, sock, ioloop, on_wake):
        super().__init__(sock, ioloop=ioloop)
        self._on_wake = on_wake

    def readable(self):
        return True

    def writable(self):
        return False

    def handle_read(self):
        try:
            self.socket.recv(64)  # the byte, or b"" once the other end is closed: either means stop
        except BlockingIOError:
            return
        self._on_wake()

    def handle_close(self):
        self.close()


def stopper(server):
    """Return stop(): callable from any thread, it ends a blocking `server.serve_forever()` running in another.

    pyftpdlib's loop is not safe to close from another thread, so stop() writes a byte to a socket pair that the loop
    watches; the loop's own thread then calls server.close_all(), the loop finds no socket left and returns. Unlike a
    polled serve_forever(blocking=False), nothing wakes the loop while it is idle.
    """
    ours, theirs = socket.socketpair()
    _Waker(ours, server.ioloop, server.close_all)

    def stop():
        try:
            theirs.send(b"x")
        except OSError:
            pass  # already stopped
        theirs.close()

    return stop
