"""MAVLink vehicles through the real nodes (`roslaunch filesync sync.launch` with its own master): the vehicle node owns
each vehicle's link, the finder, downloader (with its remover) and uploader reach it only through its services.

MAVSDK 4.1.0 is the autopilot (test/support/mavsdk_autopilot.py), on every URL form users give: `udpin:` with the
vehicle sending to a fixed port (as PX4 sends to 14540/14550 on the companion computer), `udpout:`, `tcp:`, and a
serial device made with a pty pair (Debian's socat: MAVSDK on one end as serial:///dev/pts/N:BAUD, filesync on the
other) at 921600 and 57600 baud.
"""
import hashlib
import os
import re
import subprocess
import time

import psutil
import pytest

from support.launch import NEEDS_ROS_WORKSPACE, Launch, free_port, ros_workspace_sourced
from support.mavsdk_autopilot import MavsdkAutopilot, free_udp_port
from support.ulog import write_log

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)


class PtyPair:
    """Two connected pseudo-terminals from `socat pty,raw,echo=0 pty,raw,echo=0`; stopped with stop()."""

    def __init__(self):
        self.process = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                                        stderr=subprocess.PIPE, text=True)
        self.ends = []
        deadline = time.monotonic() + 10
        while len(self.ends) < 2 and time.monotonic() < deadline:
            match = re.search(r"PTY is (\S+)", self.process.stderr.readline())
            if match:
                self.ends.append(match.group(1))
        if len(self.ends) < 2:
            self.stop()
            raise RuntimeError("socat made no pty pair")

    def stop(self):
        self.process.kill()
        self.process.wait(10)


def base_config(workdir):
    return {"staging_dir": os.path.join(workdir, "staging"), "log_dir": os.path.join(workdir, "logs"),
            "database": os.path.join(workdir, "db", "ledger.db"), "checkpoint_bytes": 64 * 1024,
            "scan_interval": 0.5, "poll_interval": 1.0, "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 10.0,
            "web": {"host": "127.0.0.1", "port": free_port()}, "sources": {}, "targets": {}, "pipelines": []}


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def wait_for(condition, timeout, what, launch):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = os.path.join(launch.workdir, "launch.log")
            tail = open(log, encoding="utf-8", errors="replace").read()[-3000:] if os.path.exists(log) else ""
            raise AssertionError(f"{what} not within {timeout} s; launch log ends:\n{tail}")
        time.sleep(0.3)


def holders(launch, predicate):
    """Names of the launch's nodes with an open UDP socket or device file that `predicate` accepts."""
    found = set()
    for name, process in launch.node_processes().items():
        try:
            opened = [f"udp:{c.laddr.port}" for c in process.net_connections(kind="udp")]
            folder = f"/proc/{process.pid}/fd"
            for descriptor in os.listdir(folder):
                try:
                    opened.append(os.readlink(os.path.join(folder, descriptor)))
                except OSError:
                    pass  # closed meanwhile
        except (psutil.Error, OSError):
            continue
        if any(predicate(item) for item in opened):
            found.add(name)
    return found


def test_every_url_form_through_the_vehicle_node(tmp_path):
    """Logs from five vehicles, one per URL form, arrive identical; each link is held by the vehicle node alone."""
    config = base_config(str(tmp_path))
    autopilots, ptys, expected = [], [], {}
    udpin_port = free_udp_port()
    forms = {"udpin": (f"udpout://127.0.0.1:{udpin_port}", f"udpin:127.0.0.1:{udpin_port}", 921600),
             "udpout": (None, None, 921600), "tcp": (None, None, 921600),
             "serial921600": (None, None, 921600), "serial57600": (None, None, 57600)}
    launch = None
    try:
        for form, (connection, url, baud) in forms.items():
            root = tmp_path / f"vehicle-{form}"
            sizes = [5_000, 0, 1_000] if form == "serial57600" else [120_000, 0, 35_001]
            for index, size in enumerate(sizes):
                path = f"2024-06-0{index + 1}/10_00_00.ulg"
                expected[(form, path)] = write_log(str(root / "log" / path), size, seed=index)
            if form == "tcp":
                port = free_port()
                connection, url = f"tcpin://127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"
            elif form.startswith("serial"):
                pair = PtyPair()
                ptys.append(pair)
                connection, url = f"serial://{pair.ends[0]}:{baud}", pair.ends[1]
            autopilot = MavsdkAutopilot(str(root), log_path=str(tmp_path / f"mavsdk-{form}.log"),
                                        connection=connection)
            autopilots.append(autopilot.start())
            if form == "udpout":
                url = autopilot.url
            os.makedirs(tmp_path / f"out-{form}")
            config["sources"][form] = {"kind": "mavlink", "url": url, "baud": baud, "root": "/log",
                                       "vehicle": form}
            config["targets"][f"out-{form}"] = {"kind": "folder", "path": str(tmp_path / f"out-{form}")}
            config["pipelines"].append({"source": form, "targets": [f"out-{form}"]})
        launch = Launch(str(tmp_path), config, own_master=True).start()
        launch.wait_nodes(timeout=90)

        def arrived():
            return all(os.path.exists(tmp_path / f"out-{form}" / path) and
                       digest(tmp_path / f"out-{form}" / path) == sha for (form, path), sha in expected.items())

        wait_for(arrived, 120, "every log of every vehicle", launch)
        # one owner per link: the udpin port and the serial devices are open in the vehicle node only
        assert holders(launch, lambda item: item == f"udp:{udpin_port}") == {"vehicle"}
        for pair in ptys:
            assert holders(launch, lambda item, end=pair.ends[1]: item == end) == {"vehicle"}
    finally:
        if launch is not None:
            launch.stop()
        for autopilot in autopilots:
            autopilot.stop()
        for pair in ptys:
            pair.stop()


def test_logs_leave_the_vehicle_once_every_target_holds_them(tmp_path):
    """Logs are downloaded, uploaded to a folder and to a second vehicle (the mavlink target), verified there, then
    removed from the first vehicle; a log whose bytes changed after the copy (same size, another CRC32) is not removed as
    that copy: its new bytes are version 2, delivered beside version 1 and then removed."""
    config = base_config(str(tmp_path))
    source_root, target_root = tmp_path / "vehicle-a", tmp_path / "vehicle-b"
    names = ["a.ulg", "b.ulg", "c.ulg"]
    digests = {name: write_log(str(source_root / "log" / name), 20_000, seed=index)
               for index, name in enumerate(names)}
    target_root.mkdir()
    os.makedirs(tmp_path / "out")
    vehicle_a = MavsdkAutopilot(str(source_root), log_path=str(tmp_path / "mavsdk-a.log")).start()
    vehicle_b = MavsdkAutopilot(str(target_root), log_path=str(tmp_path / "mavsdk-b.log"), port=free_udp_port())
    config["sources"]["px4"] = {"kind": "mavlink", "url": vehicle_a.url, "root": "/log", "vehicle": "a",
                                "growth_check": 0.5}
    config["targets"]["out"] = {"kind": "folder", "path": str(tmp_path / "out")}
    config["targets"]["other"] = {"kind": "mavlink", "url": f"udpout:127.0.0.1:{vehicle_b.fixed_port}",
                                  "root": "/inbox", "vehicle": "b"}
    config["pipelines"].append({"source": "px4", "targets": ["out", "other"], "delete_after_upload": True})
    launch = Launch(str(tmp_path), config, own_master=True)
    try:
        launch.start()
        launch.wait_nodes(timeout=90)
        wait_for(lambda: all(os.path.exists(tmp_path / "out" / name) for name in names), 90,
                 "the logs in the folder target", launch)
        time.sleep(1.0)
        assert all(os.path.exists(source_root / "log" / name) for name in names)  # vehicle b is off: kept
        changed = bytearray((source_root / "log" / "c.ulg").read_bytes())
        changed[10_000] ^= 0xFF  # same size, same name: only the vehicle's CRC32 tells
        (source_root / "log" / "c.ulg").write_bytes(bytes(changed))
        vehicle_b.start()
        wait_for(lambda: not any(os.path.exists(source_root / "log" / name) for name in ("a.ulg", "b.ulg")), 90,
                 "a.ulg and b.ulg removed from vehicle a", launch)
        for name in names:
            assert digest(tmp_path / "out" / name) == digests[name]
            wait_for(lambda n=name: os.path.exists(target_root / "inbox" / n), 30, f"{name} on vehicle b", launch)
            assert digest(target_root / "inbox" / name) == digests[name]  # the staged version, verified by CRC32
        # c.ulg changed after its copy: that copy's removal sees another CRC32 and registers the new bytes as
        # version 2, which goes to both targets beside version 1 (under its conflict name) and is then removed
        rewritten = hashlib.sha256(bytes(changed)).hexdigest()
        wait_for(lambda: not os.path.exists(source_root / "log" / "c.ulg"), 90, "version 2 of c.ulg removed", launch)
        for folder in (tmp_path / "out", target_root / "inbox"):
            held = sorted(path.name for path in folder.iterdir())
            assert len(held) == 4 and not any(name.endswith(".part") for name in held), held
            second = [name for name in held if digest(folder / name) == rewritten]
            assert len(second) == 1 and second[0] != "c.ulg", held  # beside version 1, never over it
    finally:
        launch.stop()
        vehicle_a.stop()
        vehicle_b.stop()
