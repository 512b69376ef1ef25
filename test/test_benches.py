"""The benches time what they say they time (bench/mavftp_bench.py, bench/sftp_bench.py)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))

import mavftp_bench  # noqa: E402
import sftp_bench  # noqa: E402
from support.linkemu import LinkEmulator  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4WriteRules  # noqa: E402

IDLE_DETECTION = 3.7  # pymavlink's idle_detection_time in the bench's settings


def test_pymavlink_put_is_timed_to_its_last_reply(tmp_path):
    """pymavlink's put ends at its last reply, as its command line waits for it ("put"); waiting for "CreateFile"
    added pymavlink's idle detection (3.7 s of silence) to every put."""
    root = tmp_path / "vehicle"
    (root / "up").mkdir(parents=True)
    data = os.urandom(20_000)
    local = tmp_path / "upload.ulg"
    local.write_bytes(data)
    with MavsdkAutopilot(root) as vehicle:
        link = LinkEmulator(("127.0.0.1", vehicle.port), filters=[Px4WriteRules(root)]).start()
        try:
            elapsed, written = mavftp_bench.write_pymavlink(239)(link.url, str(local), "/up/upload.ulg")
        finally:
            link.stop()
    assert written == "/up/upload.ulg" and (root / "up" / "upload.ulg").read_bytes() == data
    assert elapsed < IDLE_DETECTION, elapsed


def test_sftp_bench_times_the_whole_process_not_what_the_child_reports():
    """filesync's upload is timed as sftp's is, from the process's start to its exit: a child that says it took no
    time (as the old upload child reported its own write-to-publish time) still counts for all it ran."""
    child = ("import json, time; time.sleep(0.3); "
             "print(json.dumps({'seconds': 0.0, 'cpu': 0.0, 'write_seconds': 0.0, 'write_cpu': 0.0}))")
    seconds, _, max_rss = sftp_bench.run_child([sys.executable, "-c", child], stdout=subprocess.PIPE)[:3]
    assert seconds >= 0.3 and max_rss > 0
