"""A scene for the operator views' tests: the real sync.launch (with its own web node and diagnostic aggregator)
on a private roscore, moving files from a folder to a real, slow FTP server, with one file parked because the
server already holds different bytes under its name (the reason a person must read)."""
import os
import shutil
import time

from conftest import write_file, write_file_whole
from support.ftp_server import FtpServerProcess
from support.launch import Launch, RosMaster, free_port

KiB, MiB = 1 << 10, 1 << 20
BIG = 4 * MiB
RATE = 256 * KiB  # bwlimit per transfer: the big file is in flight for about 16 s per leg
CLASH = "clash.bin"
BIG_NAME = "flight.ulg"


class Scene:
    """Start with start(); stop() ends everything. web_port, token, inbox, ftp_root, clash_path are set."""

    def __init__(self, workdir, token="", web_host="127.0.0.1", big_file=True):
        self.workdir = str(workdir)
        self.big_file = big_file
        self.token = token
        self.web_host = web_host
        self.web_port = free_port()
        self.inbox = os.path.join(self.workdir, "inbox")
        self.ftp_root = os.path.join(self.workdir, "ftp_root")
        self.clash_path = os.path.join(self.ftp_root, CLASH)
        self.master = self.server = self.launch = None

    def config(self):
        """The launch's configuration."""
        web = {"host": self.web_host, "port": self.web_port}
        if self.token:
            web["token_env"] = "FILESYNC_TEST_WEB_TOKEN"
        return {
            "staging_dir": os.path.join(self.workdir, "staging"), "log_dir": os.path.join(self.workdir, "logs"),
            "database": os.path.join(self.workdir, "db", "ledger.db"),
            "checkpoint_bytes": 128 * KiB, "scan_interval": 0.5, "poll_interval": 1.0, "retry_base": 0.2,
            "retry_cap": 1.0, "bwlimit": RATE,
            "sources": {"inbox": {"kind": "folder", "path": self.inbox, "min_age": 0.0}},
            "targets": {"ftp": self.target_options()},
            "pipelines": [{"source": "inbox", "targets": ["ftp"]}],
            "web": web,
        }

    def target_options(self):
        """The FTP target; a final name holding other bytes parks the file (the default before targets had
        on_conflict, which now has to say so)."""
        from filesync.devices.base import Target
        options = self.server.target_options("/")
        if any(option.name == "on_conflict" for option in getattr(Target, "ENGINE_OPTIONS", ())):
            options["on_conflict"] = "park"
        return options

    def start(self):
        """roscore, the FTP server (holding a different clash.bin), sync.launch; then the two files in the inbox.
        If any of it fails, what was started is stopped (the caller gets no scene to stop: a roscore outlived the
        test run so)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        os.makedirs(self.inbox)
        self.server = FtpServerProcess(self.ftp_root, os.path.join(self.workdir, "ftp.log")).start()
        write_file(self.clash_path, 64 * KiB, seed=1)
        self.master = RosMaster(self.workdir).start()
        if self.token:
            os.environ["FILESYNC_TEST_WEB_TOKEN"] = self.token  # roslaunch's nodes inherit it
        self.launch = Launch(self.workdir, self.config()).start()
        self.launch.wait_nodes(timeout=60)
        write_file_whole(os.path.join(self.inbox, CLASH), 64 * KiB, seed=2)
        if self.big_file:
            time.sleep(1.0)  # the clash is found (and parked) first
            write_file_whole(os.path.join(self.inbox, BIG_NAME), BIG, seed=3)
        return self

    def uploaded(self, name):
        """True once the FTP server holds `name` with the inbox's bytes."""
        target, source = os.path.join(self.ftp_root, name), os.path.join(self.inbox, name)
        if not os.path.exists(target):
            return False
        with open(target, "rb") as one, open(source, "rb") as other:
            return one.read() == other.read()

    def clear_clash(self):
        """Take the server's different clash.bin away, so a retry can succeed."""
        os.remove(self.clash_path)

    def stop(self):
        """Stop the launch, the master and the server (each even if another fails)."""
        try:
            if self.launch:
                self.launch.stop()
        finally:
            try:
                if self.master:
                    self.master.stop()
            finally:
                if self.server:
                    self.server.stop()
                os.environ.pop("FILESYNC_TEST_WEB_TOKEN", None)

    def logs(self):
        """The launch log and the nodes' filesync logs, for a failure message."""
        text = []
        for name in ("launch.log",):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text.append(handle.read()[-3000:])
        logs = os.path.join(self.workdir, "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), encoding="utf-8", errors="replace") as handle:
                text.append(f"--- {name}\n" + handle.read()[-1500:])
        return "\n".join(text)


def copy_artifact(source, name):
    """Keep a screenshot as a test artifact under build/test-artifacts (the docs keep one of their own)."""
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "build", "test-artifacts")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(source, os.path.join(folder, name))
