"""vsftpd and ProFTPD for tests: started on 127.0.0.1 on a free port with their own config, users and files under a
temporary directory, stopped with kill (the whole process group, sessions included) in finally.

Both run from Debian's packages extracted into a cache (~/.cache/filesync/ftp-servers), not installed: the packages
conflict with each other, and installing either would start a daemon on port 21 on this machine. `make test-lib`
extracts them first (`python3 test/support/ftp_servers.py --extract`, which runs `apt-get download` and
`dpkg-deb -x`); a test extracts them itself when they are missing. Their libraries are in the Makefile's APT_PACKAGES.

- ProFTPD: a virtual user from an AuthUserFile (password hashed with `openssl passwd -6`), with our uid, chrooted to
  the storage directory (so the device root is "/"); mod_digest loaded (HASH, XCRC, XMD5, XSHA256);
  AllowStoreRestart on or off (Debian's default is off: `451 Append/Restart not permitted`); AllowOverwrite on (as
  Debian's config sets it) or off (ProFTPD's own default: STOR and RNTO over an existing file are refused, 550).
- vsftpd: anonymous login (user `anonymous`, no password) with `run_as_launching_user`, so it needs no system user
  and no PAM file; vsftpd cannot chroot that way, so the device root is the storage directory's absolute path.
  It has no MLSD and no digests: a client lists with LIST.
- pyftpdlib with TLS (PyftpdlibTls): pyftpdlib's TLS_FTPHandler (it needs pyOpenSSL: Debian's python3-openssl), run
  by this file (`--serve-pyftpdlib-tls`), TLS required on the control and data connections.
All bind only to 127.0.0.1 and pick passive ports there (the kernel's free ports: no fixed range to collide).

tls=True (vsftpd, pyftpdlib): explicit FTPS with a server certificate for 127.0.0.1 signed by a CA made in the
server's directory (support/tls.py; `ca_file`); expired=True gives a certificate that expired in 2020. vsftpd then
requires TLS for login and data, and requires each data connection to resume the control connection's TLS session
(require_ssl_reuse, its default), as it does in production.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script (the pyftpdlib server): make `support` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.tls import make_certificates  # noqa: E402

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "filesync", "ftp-servers")
BINARIES = {"vsftpd": "usr/sbin/vsftpd", "proftpd-core": "usr/sbin/proftpd"}


def extracted(package: str) -> str:
    """The directory holding Debian's `package` unpacked (downloading and unpacking it on first use)."""
    target = os.path.join(CACHE, package)
    if os.path.exists(os.path.join(target, BINARIES[package])):
        return target
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix=package + ".", dir=CACHE)
    try:
        subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True, capture_output=True, text=True)
        [deb] = [name for name in os.listdir(work) if name.endswith(".deb")]
        unpacked = os.path.join(work, "root")
        subprocess.run(["dpkg-deb", "-x", os.path.join(work, deb), unpacked], check=True)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(unpacked, target)  # whole or not at all, should two runs unpack at once
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"cannot fetch the Debian package {package}: {error.stderr or error}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FtpServer:
    """One server process with its files under `directory`: start(), stop() (kill), start() again on the same port."""

    user = "tester"
    password = "secret"
    device_root = "/"  # what the device's `root` option is for the storage directory

    def __init__(self, directory, tls=False, expired=False):
        self.directory = directory
        self.storage = os.path.join(directory, "files")
        os.makedirs(self.storage, exist_ok=True)
        self.port = free_port()
        self.process = None
        self.tls = tls
        self.certificates = make_certificates(os.path.join(directory, "tls"), expired) if tls else None

    @property
    def ca_file(self):
        """The test CA's certificate (only with tls=True)."""
        return self.certificates["ca.pem"]

    def command(self):
        raise NotImplementedError

    def start(self, timeout=20):
        """Start (on the same port as before) and wait until it greets."""
        deadline = time.monotonic() + timeout
        output = os.path.join(self.directory, "server.out")
        while time.monotonic() < deadline:
            with open(output, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True)  # its own group: stop() kills sessions too
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                        if connection.recv(4).startswith(b"220"):
                            return self
                except OSError:
                    time.sleep(0.05)
            time.sleep(0.2)  # it exited: the port may linger for a moment after a kill
        self.stop()
        with open(output, "rb") as log:
            tail = log.read()[-2000:].decode("utf-8", "replace")
        raise RuntimeError(f"{type(self).__name__} did not start on 127.0.0.1:{self.port}:\n{tail}")

    def stop(self):
        """Kill the server and its session processes (as a crash would) and wait for it."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def options(self, **extra):
        """Options for an `ftp` source or target on this server's storage directory."""
        options = {"kind": "ftp", "host": "127.0.0.1", "port": self.port, "user": self.user,
                   "password": self.password, "root": self.device_root, "timeout": 10.0}
        if self.tls:
            options.update(tls=True, ca_bundle=self.ca_file)
        options.update(extra)
        return options


class Vsftpd(FtpServer):
    """Debian's vsftpd, anonymous with upload, mkdir, rename and delete rights (see the module doc)."""

    user = "anonymous"
    password = ""

    def __init__(self, directory, tls=False, expired=False):
        super().__init__(directory, tls, expired)
        self.device_root = os.path.abspath(self.storage)

    def command(self):
        empty = os.path.join(self.directory, "empty")
        os.makedirs(empty, exist_ok=True)
        config = os.path.join(self.directory, "vsftpd.conf")
        settings = {
            "listen": "YES", "listen_ipv6": "NO", "listen_address": "127.0.0.1", "listen_port": self.port,
            "background": "NO", "run_as_launching_user": "YES", "ftp_username": _user_name(),
            "anonymous_enable": "YES", "local_enable": "NO", "no_anon_password": "YES", "anon_root": self.storage,
            "write_enable": "YES", "anon_upload_enable": "YES", "anon_mkdir_write_enable": "YES",
            "anon_other_write_enable": "YES", "anon_world_readable_only": "NO", "anon_umask": "022",
            "pasv_enable": "YES", "pasv_address": "127.0.0.1", "secure_chroot_dir": empty,
            "xferlog_enable": "NO", "seccomp_sandbox": "NO", "isolate": "NO", "isolate_network": "NO",
        }
        if self.tls:
            settings.update({
                "ssl_enable": "YES", "allow_anon_ssl": "YES", "force_anon_logins_ssl": "YES",
                "force_anon_data_ssl": "YES", "require_ssl_reuse": "YES", "ssl_ciphers": "HIGH",
                "rsa_cert_file": self.certificates["server.pem"],
                "rsa_private_key_file": self.certificates["server.key"],
            })
        with open(config, "w") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in settings.items())
        return [os.path.join(extracted("vsftpd"), BINARIES["vsftpd"]), config]


class Proftpd(FtpServer):
    """Debian's ProFTPD with mod_digest, a virtual user chrooted to the storage directory (see the module doc)."""

    def __init__(self, directory, allow_restart=True, allow_overwrite=True):
        super().__init__(directory)
        self.allow_restart, self.allow_overwrite = allow_restart, allow_overwrite

    def command(self):
        package = extracted("proftpd-core")
        users = os.path.join(self.directory, "passwd")
        groups = os.path.join(self.directory, "group")
        hashed = subprocess.run(["openssl", "passwd", "-6", self.password], check=True, capture_output=True,
                                text=True).stdout.strip()
        uid, gid = os.getuid(), os.getgid()
        for path, line in ((users, f"{self.user}:{hashed}:{uid}:{gid}::{self.storage}:/bin/false\n"),
                           (groups, f"{self.user}:x:{gid}:\n")):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                handle.write(line)
        config = os.path.join(self.directory, "proftpd.conf")
        lines = [
            "ServerType standalone", "DefaultServer on", 'ServerName "filesync test"', f"Port {self.port}",
            "DefaultAddress 127.0.0.1", "SocketBindTight on", "UseIPv6 off",
            f"PidFile {self.directory}/proftpd.pid", f"ScoreboardFile {self.directory}/proftpd.scoreboard",
            "DelayTable none", "WtmpLog off", "TransferLog none", f"SystemLog {self.directory}/proftpd.log",
            "ControlsEngine off", "UseReverseDNS off", "UseFtpUsers off",
            f"ModulePath {package}/usr/lib/proftpd", "LoadModule mod_digest.c",
            "AuthOrder mod_auth_file.c", f"AuthUserFile {users}", f"AuthGroupFile {groups}",
            "RequireValidShell off", f"RootLogin {'on' if uid == 0 else 'off'}", "DefaultRoot ~",
            f"AllowOverwrite {'on' if self.allow_overwrite else 'off'}",
            f"AllowStoreRestart {'on' if self.allow_restart else 'off'}",
            "AllowRetrieveRestart on", "TimesGMT on", "Umask 022",
        ]
        with open(config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return [os.path.join(package, BINARIES["proftpd-core"]), "--nodaemon", "--quiet", "--config", config]


class PyftpdlibTls(FtpServer):
    """pyftpdlib's TLS_FTPHandler (explicit FTPS, TLS required for login and data), one user, run by this file."""

    def __init__(self, directory, expired=False):
        super().__init__(directory, tls=True, expired=expired)

    def command(self):
        return [sys.executable, os.path.abspath(__file__), "--serve-pyftpdlib-tls", self.storage, str(self.port),
                self.certificates["server.pem"], self.certificates["server.key"], self.user, self.password]


def serve_pyftpdlib_tls(root, port, certificate, key, user, password):
    """Run pyftpdlib with TLS required on 127.0.0.1:`port` until killed."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")

    class Handler(TLS_FTPHandler):
        pass
    Handler.authorizer = authorizer
    Handler.certfile, Handler.keyfile = certificate, key
    Handler.tls_control_required = Handler.tls_data_required = True
    Handler.permit_foreign_addresses = False
    FTPServer(("127.0.0.1", int(port)), Handler).serve_forever(timeout=0.5)


def _user_name():
    """The name of the user running the tests (vsftpd looks its `ftp_username` up, and it must exist)."""
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", action="store_true", help="download and unpack the servers' Debian packages")
    parser.add_argument("--serve-pyftpdlib-tls", nargs=6, metavar=("ROOT", "PORT", "CERT", "KEY", "USER", "PASSWORD"),
                        help="run pyftpdlib with TLS (PyftpdlibTls does)")
    arguments = parser.parse_args()
    if arguments.serve_pyftpdlib_tls:
        serve_pyftpdlib_tls(*arguments.serve_pyftpdlib_tls)
    elif arguments.extract:
        for name in BINARIES:
            print(name, extracted(name))
