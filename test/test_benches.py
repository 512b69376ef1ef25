"""The benches time what they say they time (bench/mavftp_bench.py, bench/sftp_bench.py)."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))

import mavftp_bench  # noqa: E402
import sftp_bench  # noqa: E402
from support.linkemu import LinkEmulator  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4WriteRules  # noqa: E402

IDLE_DETECTION = 3.7  # pymavlink's idle_detection_time in the bench's settings
FILE_TRANSFER_PROTOCOL = 110  # MAVLink's message id of MAVLink FTP


class LastFtpReply:
    """A LinkEmulator filter that notes when the vehicle's last MAVLink FTP message went down the link (heartbeats go
    on after it)."""

    def __init__(self):
        self.at = None

    def __call__(self, direction, client, data, answer):
        v2 = data[:1] == b"\xfd" and int.from_bytes(data[7:10], "little") == FILE_TRANSFER_PROTOCOL
        v1 = data[:1] == b"\xfe" and len(data) > 5 and data[5] == FILE_TRANSFER_PROTOCOL
        if direction == "down" and (v1 or v2):
            self.at = time.monotonic()
        return data


def test_pymavlink_put_is_timed_to_its_last_reply(tmp_path):
    """pymavlink's put ends at its last reply, as its command line waits for it ("put"); waiting for "CreateFile"
    added pymavlink's idle detection (3.7 s of silence after its last request) to every put. Timed from the vehicle's
    last FTP reply, not as a whole: a put that is slow on a loaded machine (6.5 s for 20 KB once) must not pass for
    one that waited for the silence, nor fail for it."""
    root = tmp_path / "vehicle"
    (root / "up").mkdir(parents=True)
    data = os.urandom(20_000)
    local = tmp_path / "upload.ulg"
    local.write_bytes(data)
    with MavsdkAutopilot(root) as vehicle:
        last_reply = LastFtpReply()
        link = LinkEmulator(("127.0.0.1", vehicle.port), filters=[last_reply, Px4WriteRules(root)]).start()
        try:
            _elapsed, written = mavftp_bench.write_pymavlink(239)(link.url, str(local), "/up/upload.ulg")
            returned = time.monotonic()
        finally:
            link.stop()
    assert written == "/up/upload.ulg" and (root / "up" / "upload.ulg").read_bytes() == data
    # waiting for the silence returns IDLE_DETECTION minus a round trip after the last reply; the put, within ms
    assert returned - last_reply.at < IDLE_DETECTION - 0.7, returned - last_reply.at


def test_sftp_bench_times_the_whole_process_not_what_the_child_reports():
    """filesync's upload is timed as sftp's is, from the process's start to its exit: a child that says it took no
    time (as the old upload child reported its own write-to-publish time) still counts for all it ran."""
    child = ("import json, time; time.sleep(0.3); "
             "print(json.dumps({'seconds': 0.0, 'cpu': 0.0, 'write_seconds': 0.0, 'write_cpu': 0.0}))")
    seconds, _, max_rss = sftp_bench.run_child([sys.executable, "-c", child], stdout=subprocess.PIPE)[:3]
    assert seconds >= 0.3 and max_rss > 0
