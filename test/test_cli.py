"""The command-line tool against a real ROS master on an ephemeral port, the real ledger and status nodes and, for the
live view, real workers moving a file to a real FTP server. The tool runs as a process, as a person would run it."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_file
from filesync.ledger.store import Ledger
from support.ftp_server import FtpServerProcess
from support.launch import free_port
from support.nodes import Stack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1 << 20


def ros_environment():
    """This environment plus the catkin workspace's (the messages live in its devel space); None if not built."""
    workspace = os.path.join(os.path.expanduser("~"), ".cache", "filesync",
                             "ws-" + hashlib.md5((ROOT + "\n").encode()).hexdigest()[:8])
    setup = os.path.join(workspace, "devel", "setup.bash")
    if not os.path.exists(setup):
        return None
    dump = subprocess.run(["bash", "-c", f"set +u; source {setup} && env -0"], capture_output=True, timeout=60,
                          check=True).stdout
    return dict(entry.split("=", 1) for entry in dump.decode().split("\0") if "=" in entry)


ENVIRONMENT = ros_environment()
pytestmark = pytest.mark.skipif(ENVIRONMENT is None, reason="the catkin workspace is not built: run `make setup`")


class Ros:
    """A rosmaster on its own port, nodes started as processes, and the tool run against them."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.environment = dict(ENVIRONMENT, ROS_MASTER_URI=self.uri, ROS_HOME=os.path.join(workdir, "ros_home"),
                                ROS_LOG_DIR=os.path.join(workdir, "ros_log"), ROS_HOSTNAME="127.0.0.1")
        self.processes = {}
        self.nodes = Stack(workdir, self.environment)

    def start_master(self):
        port = self.uri.rsplit(":", 1)[1]
        self._start("master", ["rosmaster", "--core", "-p", port])
        deadline = time.monotonic() + 30
        while subprocess.run(["rosparam", "list"], env=self.environment, capture_output=True,
                             timeout=30).returncode:
            assert time.monotonic() < deadline, "rosmaster did not start"
            time.sleep(0.2)

    def set_config(self, config):
        path = os.path.join(self.workdir, "config.yaml")
        import yaml
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        subprocess.run(["rosparam", "load", path, "/filesync/config"], env=self.environment, check=True, timeout=30)

    def start_node(self, name):
        self.nodes.start(name)

    def _start(self, name, command):
        log = open(os.path.join(self.workdir, f"{name}.log"), "a")
        self.processes[name] = subprocess.Popen(command, env=self.environment, stdout=log, stderr=subprocess.STDOUT)

    def stop_all(self):
        self.nodes.stop_all()
        for process in self.processes.values():  # the master, after the nodes
            process.send_signal(signal.SIGINT)
            process.wait(15)
        self.processes.clear()

    def tool(self, *arguments, timeout=60):
        """Run `filesync ARGUMENTS` the way rosrun does; returns the CompletedProcess."""
        return subprocess.run([sys.executable, "-c", "import sys; from filesync.cli import main; sys.exit(main())",
                               *arguments], env=self.environment, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ros(tmp_path):
    ros = Ros(str(tmp_path))
    try:
        yield ros
    finally:
        ros.stop_all()


def test_no_master_is_one_clear_line_and_no_hang(ros):
    for arguments in (["status"], ["ls"], ["retry", "3"], ["forget", "3"]):
        started = time.monotonic()
        result = ros.tool("--timeout", "2", *arguments)
        assert result.returncode == 1, result
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"filesync: no ROS master at {ros.uri}"), result.stderr
        assert time.monotonic() - started < 30


def test_bad_usage_exits_2(ros):
    result = ros.tool("retry", "abc")
    assert result.returncode == 2 and "invalid int value" in result.stderr
    assert ros.tool("ls", "lost").returncode == 2


def seed_ledger(database):
    """Three files in a real ledger: one uploaded, one parked on its download, one found."""
    ledger = Ledger(database)
    try:
        ledger.register("inbox", ["ftp"], False, [("done.bin", 1000, 1.0), ("bad.bin", 2 * MiB, 2.0),
                                                  ("new.bin", 300, 3.0)])
        done, bad, _ = (ledger.find("inbox", name).id for name in ("done.bin", "bad.bin", "new.bin"))
        ledger.claim("download", "inbox", "w", 30)
        ledger.finish(done, "download", "inbox", "w", "done")
        ledger.claim("upload", "ftp", "w", 30)
        ledger.finish(done, "upload", "ftp", "w", "done", location="ftp://x/done.bin")
        ledger.claim("download", "inbox", "w", 30)
        ledger.finish(bad, "download", "inbox", "w", "park", error="FileError: read error at 65536")
        return bad
    finally:
        ledger.close()


def test_ls_retry_forget_and_the_live_status(ros, tmp_path):
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    try:
        database = str(tmp_path / "db" / "ledger.db")
        bad = seed_ledger(database)
        ros.start_master()
        ros.set_config({"staging_dir": str(tmp_path / "staging"), "database": database,
                        "log_dir": str(tmp_path / "logs"), "scan_interval": 0.5, "poll_interval": 1.0,
                        "checkpoint_bytes": 256 * 1024, "bwlimit": 512 * 1024,
                        "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
                        "targets": {"ftp": server.target_options("/up")},
                        "pipelines": [{"source": "inbox", "targets": ["ftp"]}]})

        # the master answers, the ledger does not (yet)
        result = ros.tool("--timeout", "2", "ls")
        assert result.returncode == 1
        assert result.stderr.strip() == ("filesync: the ledger (/filesync/ledger/query) does not answer: is "
                                         "sync.launch running?")
        result = ros.tool("--timeout", "2", "status", "--once")
        assert result.returncode == 1
        assert result.stderr.strip().startswith("filesync: no status on /filesync/status within 2 s")

        ros.start_node("ledger")
        result = ros.tool("--timeout", "30", "ls")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert re.split(r"\s+", lines[0].strip()) == ["ID", "STATE", "SOURCE", "SIZE", "PATH"]
        assert [re.split(r"\s+", line.strip())[1] for line in lines[1:4]] == ["failed", "found", "uploaded"]
        assert lines[1].split()[0] == str(bad) and "bad.bin" in lines[1] and "2.0 MiB" in lines[1]
        assert "(download inbox: FileError: read error at 65536)" in lines[1]
        assert lines[4] == "3 file(s): failed 1, found 1, uploaded 1"

        result = ros.tool("ls", "failed")
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 3 and "bad.bin" in result.stdout

        result = ros.tool("retry", str(bad))
        assert (result.returncode, result.stdout) == (0, f"file {bad} is back in line (now found: bad.bin)\n")
        assert ros.tool("ls", "failed").stdout == "no files in state failed\n"

        staged = tmp_path / "staging" / "inbox" / str(bad)
        staged.parent.mkdir(parents=True)
        for name in (staged, f"{staged}.part", f"{staged}.json"):  # what a parked download may leave
            open(name, "w").close()
        result = ros.tool("forget", str(bad))
        assert (result.returncode, result.stdout) == (0, f"file {bad} forgotten\n")
        assert os.listdir(staged.parent) == []  # the forgotten version leaves nothing in staging
        result = ros.tool("forget", str(bad))
        assert (result.returncode, result.stdout) == (1, f"no file {bad}\n")
        assert ros.tool("ls").stdout.splitlines()[-1] == "2 file(s): found 1, uploaded 1"

        # the live view, while real workers move a file at 512 KiB/s
        write_file(str(tmp_path / "inbox" / "new.bin"), 300)  # the seeded file, so its download works
        write_file(str(tmp_path / "inbox" / "flight.ulg"), 4 * MiB)
        for name in ("status", "finder", "downloader", "uploader"):
            ros.start_node(name)
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            result = ros.tool("--timeout", "10", "status", "--once")
            assert result.returncode == 0, result.stderr
            # a moving transfer, once every node has reported (the uploader's first report may come a moment later)
            if re.search(r"(download|upload) +\S+: flight\.ulg +\[#*-+\] +\d+% [\d.]+ [KM]iB/4\.0 MiB [\d.]+ \S+/s "
                         r"eta (\d+s|\d+m\d+s)", result.stdout) and "no node uses it" not in result.stdout:
                seen = result.stdout
                break
            time.sleep(0.5)
        assert seen, result.stdout
        assert re.search(r"inbox -> ftp: .*uploaded \d", seen)
        assert "source inbox: up" in seen and "target ftp: up" in seen

        # without --once on a pipe, it prints a view per status until interrupted
        live = subprocess.Popen([sys.executable, "-c", "import sys; from filesync.cli import main; sys.exit(main())",
                                 "status"], env=ros.environment, stdout=subprocess.PIPE, text=True)
        try:
            views, deadline = 0, time.monotonic() + 60
            while views < 3 and time.monotonic() < deadline:
                if live.stdout.readline().startswith("inbox -> ftp"):
                    views += 1
            assert views == 3
        finally:
            live.send_signal(signal.SIGINT)
            assert live.wait(20) == 0

        # new.bin was seeded with another time than the file now has: a second version, shown as such
        listing = ros.tool("ls").stdout
        assert re.search(r"new\.bin  \[version 2\]", listing), listing
        assert re.search(r"skipped .* new\.bin  \(replaced on the source by version 2", listing), listing
    finally:
        ros.stop_all()
        server.stop()
        shutil.rmtree(str(tmp_path / "ros_log"), ignore_errors=True)
