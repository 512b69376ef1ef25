"""The ftp_server node as it runs in the launch: a real roscore and the real node, files moved with ftplib.

pyftpdlib 2.2.0 logs ">>> starting FTP server on ... <<<" on every serve_forever() call, so a node that polls it
(serve_forever(blocking=False) in a loop) wrote ~10,000 lines a second during a transfer into rospy's log file. The
node serves in one blocking serve_forever(): the banner is logged once, and the idle node's main thread sleeps.
"""
import ftplib
import glob
import io
import os
import signal
import subprocess
import time

import pytest
import yaml

from support.launch import (NEEDS_ROS_WORKSPACE, RosMaster, free_port, ros_workspace_sourced, voluntary_switches,
                            wait_port)
from support.nodes import Stack

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)

BANNER = "starting FTP server"


@pytest.fixture
def ftp_node(tmp_path):
    """A private roscore and the ftp_server node on a free 127.0.0.1 port; yields (process, port)."""
    master = RosMaster(str(tmp_path)).start()
    stack = Stack(str(tmp_path))
    try:
        port = free_port()
        config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
                  "log_dir": str(tmp_path / "logs"),
                  "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox")}},
                  "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
                  "pipelines": [{"source": "inbox", "targets": ["out"]}],
                  "ftp_server": {"enabled": True, "host": "127.0.0.1", "port": port,
                                 "root": str(tmp_path / "ftp_root"), "users": [{"name": "drone", "password": "pw"}]}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(["rosparam", "load", str(tmp_path / "config.yaml"), "/filesync/config"], check=True,
                       timeout=60)
        stack.start("ftp_server")
        wait_port(port, 60, stack.processes["ftp_server"])
        yield stack.processes["ftp_server"], port
    finally:
        stack.stop_all()
        master.stop()


def _rospy_log(tmp_path):
    """The text of the node's rospy log file (root logger: where pyftpdlib's lines go) and its rotations."""
    paths = glob.glob(str(tmp_path / "ros_home" / "log" / "**" / "*ftp_server*.log*"), recursive=True)
    assert paths, "no rospy log file of the ftp_server node"
    return "".join(open(path, encoding="utf-8", errors="replace").read() for path in sorted(paths))


def test_the_start_banner_is_logged_once_through_transfers_and_the_idle_node_sleeps(ftp_node, tmp_path):
    process, port = ftp_node
    files = {f"flight_{index}.bin": os.urandom(256 * 1024 + index) for index in range(5)}
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login("drone", "pw")
        for name, data in files.items():
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
        for name, data in files.items():
            received = io.BytesIO()
            ftp.retrbinary(f"RETR {name}", received.write)
            assert received.getvalue() == data
        assert sorted(ftp.nlst()) == sorted(files)
    for name, data in files.items():
        assert (tmp_path / "ftp_root" / name).read_bytes() == data
    starts = [line for line in _rospy_log(tmp_path).splitlines() if BANNER in line]
    assert len(starts) == 1, f"{len(starts)} '{BANNER}' lines in the node's log (expected 1): {starts[:3]}"

    # idle: nothing polls the server, so the main thread does not wake (a 0.5 s poll woke it ~6 times)
    time.sleep(1.0)
    before = voluntary_switches(process.pid)
    time.sleep(3.0)
    woke = voluntary_switches(process.pid) - before
    assert woke <= 1, f"the idle ftp_server node's main thread woke {woke} times in 3 s"

    # SIGINT (as roslaunch stops it) ends the node at once and cleanly, without another banner
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert sum(BANNER in line for line in _rospy_log(tmp_path).splitlines()) == 1
