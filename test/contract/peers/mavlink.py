"""The MAVLink FTP peer: MAVSDK 4.1.0 acting as an autopilot (support/mavsdk_autopilot.py) serving the storage
directory, as a `mavlink` source and target; unreachable while the autopilot is killed, back after it starts again
on the same port (a reboot).

What it lacks, declared: its server empties a file opened for writing (OpenFileWO), so an interrupted upload starts
over (StartOver) where PX4 would resume; one MAVLink FTP request carries at most 238 bytes of path, and MAVSDK's
listing stops at an entry longer than one answer, so the 255-byte name of the contract is out of reach (peer.py has
no expectation for a name-length limit yet: until it has, this peer runs as pending, its passes show as XPASS).

Reading the contract's 3 MiB file six times at MAVSDK's burst pace (about 115 KB/s on loopback) takes over two
minutes, so the peer is registered only for `make test-long` (FILESYNC_LONG_TESTS=1).
"""
from contextlib import contextmanager
import os

from contract.peer import Peer, peer
from filesync.devices import create_source, create_target
from support.mavsdk_autopilot import MavsdkAutopilot

OPTIONS = {"kind": "mavlink", "root": "/", "timeout": 0.3, "retries": 3, "heartbeat_timeout": 2.0}


NAME_LIMIT = ("MAVLink FTP carries at most 238 bytes of path: the contract's 255-byte name cannot be written, and "
              "MAVSDK's listing stops at it")


@contextmanager
def mavsdk(directory):
    storage = os.path.join(directory, "files")
    os.makedirs(storage)
    autopilot = MavsdkAutopilot(storage, log_path=os.path.join(directory, "mavsdk.log")).start()
    options = {**OPTIONS, "url": autopilot.url}
    try:
        yield Peer(storage=storage, stop=autopilot.stop, start=autopilot.restart,
                   new_source=lambda **extra: create_source("peer", {**options, "include": ["*"], "settle": False,
                                                                      "growth_check": 0.0, **extra}),
                   new_target=lambda **extra: create_target("peer", {**options, **extra}),
                   expect={"digests": ("mavftp-crc32",), "checksum": True, "start_over": True, "non_utf8": True})
    finally:
        autopilot.stop()


if os.environ.get("FILESYNC_LONG_TESTS"):
    peer("mavlink-mavsdk", pending=lambda: NAME_LIMIT)(mavsdk)
