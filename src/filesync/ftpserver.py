"""The bundled FTP server (pyftpdlib): serves a directory to configured users, no anonymous access."""
import logging
import os
import secrets

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
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


def build_server(settings):
    """An FTPServer for the checked `ftp_server` settings of the config (not yet serving)."""
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
    return FTPServer((settings["host"], settings["port"]), handler)
