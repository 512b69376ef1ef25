"""MAVLink vehicles through the ROS 2 nodes: the vehicle node owns each vehicle's link and serves its FTP services
(list, read, crc32, remove, write, rename) under /filesync/vehicle; the finder, downloader (with its remover) and
uploader reach the vehicles only through them. MAVSDK 4.1.0 is the autopilot (test/support/mavsdk_autopilot.py)."""
import hashlib
import os

from support.launch import free_port
from support.mavsdk_autopilot import MavsdkAutopilot, free_udp_port
from support.ros2_stack import Ros2Stack, wait_for
from support.ulog import write_log


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_logs_go_to_a_folder_and_a_second_vehicle_then_leave_the_first(tmp_path):
    source_root, target_root = tmp_path / "vehicle-a", tmp_path / "vehicle-b"
    names = ["a.ulg", "b.ulg", "c.ulg"]
    digests = {name: write_log(str(source_root / "log" / name), 20_000 * (index + 1), seed=index)
               for index, name in enumerate(names)}
    target_root.mkdir()
    (tmp_path / "out").mkdir()
    vehicle_a = MavsdkAutopilot(str(source_root), log_path=str(tmp_path / "mavsdk-a.log"))
    vehicle_b = MavsdkAutopilot(str(target_root), log_path=str(tmp_path / "mavsdk-b.log"), port=free_udp_port())
    stack = None
    try:
        vehicle_a.start()
        vehicle_b.start()
        config = {
            "staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "log_dir": str(tmp_path / "logs"), "checkpoint_bytes": 64 * 1024, "scan_interval": 0.5,
            "poll_interval": 1.0, "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 10.0,
            "sources": {"px4": {"kind": "mavlink", "url": vehicle_a.url, "root": "/log", "vehicle": "a",
                                "growth_check": 0.5}},
            "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")},
                        "other": {"kind": "mavlink", "url": f"udpout:127.0.0.1:{vehicle_b.fixed_port}",
                                  "root": "/inbox", "vehicle": "b"}},
            "pipelines": [{"source": "px4", "targets": ["out", "other"], "delete_after_upload": True}],
            "ftp_server": {"enabled": False}, "web": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        }
        stack = Ros2Stack(tmp_path, config).start()
        wait_for(lambda: not any(os.path.exists(source_root / "log" / name) for name in names), 120,
                 "the logs removed from vehicle a")
        for name in names:
            assert digest(tmp_path / "out" / name) == digests[name]
            assert digest(target_root / "inbox" / name) == digests[name]  # verified there by the vehicle's CRC32
        assert not any(path.name.endswith(".part") for path in (target_root / "inbox").iterdir())
        # the vehicle node holds both links (the workers' mavlink devices were given its services instead)
        log = stack.log("vehicle")
        assert f"vehicle a: owns the link {vehicle_a.url}" in log and "vehicle b: owns the link" in log, log
    finally:
        left = stack.stop() if stack is not None else []
        vehicle_a.stop()
        vehicle_b.stop()
        assert not left, left
