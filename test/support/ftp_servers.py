"""vsftpd and ProFTPD for tests: started on 127.0.0.1 on a free port with their own config, users and files under a
temporary directory, stopped with kill (the whole process group, sessions included) in finally.

Both run from Debian's packages extracted into a cache (~/.cache/filesync/ftp-servers), not installed: the packages
conflict with each other, and installing either would start a daemon on port 21 on this machine. `make test-lib`
extracts them first (`python3 test/support/ftp_servers.py --extract`, which runs `apt-get download` and
`dpkg-deb -x`); a test extracts them itself when they are missing. Their libraries are in the Makefile's APT_PACKAGES.

- ProFTPD: a virtual user from an AuthUserFile (password hashed with `openssl passwd -6`), with our uid, chrooted to
  the storage directory (so the device root is "/"); mod_digest loaded (HASH, XCRC, XMD5, XSHA256);
  AllowStoreRestart on or off (Debian's default is off: `451 Append/Restart not permitted`).
- vsftpd: anonymous login (user `anonymous`, no password) with `run_as_launching_user`, so it needs no system user
  and no PAM file; vsftpd cannot chroot that way, so the device root is the storage directory's absolute path.
  It has no MLSD and no digests: a client lists with LIST.
Both bind only to 127.0.0.1 and pick passive ports there (the kernel's free ports: no fixed range to collide).
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

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

    def __init__(self, directory):
        self.directory = directory
        self.storage = os.path.join(directory, "files")
        os.makedirs(self.storage, exist_ok=True)
        self.port = free_port()
        self.process = None

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
        return {"kind": "ftp", "host": "127.0.0.1", "port": self.port, "user": self.user, "password": self.password,
                "root": self.device_root, "timeout": 10.0, **extra}


class Vsftpd(FtpServer):
    """Debian's vsftpd, anonymous with upload, mkdir, rename and delete rights (see the module doc)."""

    user = "anonymous"
    password = ""

    def __init__(self, directory):
        super().__init__(directory)
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
        with open(config, "w") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in settings.items())
        return [os.path.join(extracted("vsftpd"), BINARIES["vsftpd"]), config]


class Proftpd(FtpServer):
    """Debian's ProFTPD with mod_digest, a virtual user chrooted to the storage directory (see the module doc)."""

    def __init__(self, directory, allow_restart=True):
        super().__init__(directory)
        self.allow_restart = allow_restart

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
            "AllowOverwrite on", f"AllowStoreRestart {'on' if self.allow_restart else 'off'}",
            "AllowRetrieveRestart on", "TimesGMT on", "Umask 022",
        ]
        with open(config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return [os.path.join(package, BINARIES["proftpd-core"]), "--nodaemon", "--quiet", "--config", config]


def _user_name():
    """The name of the user running the tests (vsftpd looks its `ftp_username` up, and it must exist)."""
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", action="store_true", help="download and unpack the servers' Debian packages")
    if parser.parse_args().extract:
        for name in BINARIES:
            print(name, extracted(name))
