"""The bundled FTP server: configured users only, no anonymous login, a password file made on first start."""
import ftplib
import io
import os
import stat
import threading

import pytest
from pyftpdlib.ioloop import IOLoop

from filesync.config import load_config
from filesync.errors import ConfigError
from filesync.ftpserver import build_server


def settings(tmp_path, **users):
    raw = {"sources": {"a": {"kind": "folder", "path": str(tmp_path)}}, "targets": {"b": {"kind": "folder",
           "path": str(tmp_path)}}, "pipelines": [{"source": "a", "targets": ["b"]}],
           "ftp_server": {"enabled": True, "port": 2121, "root": str(tmp_path / "root"),
                          "users": [dict(name=name, **options) for name, options in users.items()]}}
    server = load_config(raw).ftp_server
    server["port"] = 0  # the config checks ports from 1; the test asks the kernel for a free one
    return server


@pytest.fixture
def serve():
    servers = []

    stop = threading.Event()

    def run(server):
        # serve and close in the same thread: pyftpdlib's loop is not safe to close from another one
        while not stop.is_set():
            server.serve_forever(timeout=0.1, blocking=False)
        server.close_all()

    def start(server_settings):
        # each its own IOLoop: two servers served from two threads on pyftpdlib's shared one raced (EBADF on listen)
        server = build_server(server_settings, ioloop=IOLoop())
        thread = threading.Thread(target=run, args=(server,), daemon=True)
        thread.start()
        servers.append(thread)
        return server.address

    yield start
    stop.set()
    for thread in servers:
        thread.join(5)


def test_configured_user_can_write_and_anonymous_cannot_log_in(tmp_path, serve):
    host, port = serve(settings(tmp_path, drone={"password": "pw"}))
    assert host == "127.0.0.1"
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=10)
        ftp.login("drone", "pw")
        ftp.storbinary("STOR hello.txt", io.BytesIO(b"hi"))
    assert (tmp_path / "root" / "hello.txt").read_bytes() == b"hi"
    for user, password in (("anonymous", "x@y"), ("drone", "wrong")):
        with ftplib.FTP() as ftp:
            ftp.connect(host, port, timeout=10)
            with pytest.raises(ftplib.error_perm, match="530"):
                ftp.login(user, password)


def test_password_file_is_made_on_first_start_and_private(tmp_path, serve):
    password_file = tmp_path / "secrets" / "ftp_password"
    host, port = serve(settings(tmp_path, drone={"password_file": str(password_file)}))
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 16
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=10)
        ftp.login("drone", password)
    serve(settings(tmp_path, drone={"password_file": str(password_file)}))
    assert password_file.read_text().strip() == password  # kept, not replaced


def test_a_user_without_password_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"ftp_server.users\[0\]: user drone has no password"):
        build_server(settings(tmp_path, drone={}))
