"""Other bytes under the same size and time (a vehicle lists no times): the ledger tells them apart by the device's
checksum, when one is given, against the one recorded when the newest version was staged. The MAVLink end to end
case is in test_mavlink_source.py."""
import subprocess
import sys

import pytest

from filesync.ledger.store import Ledger
from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced


def staged(ledger, record, checksum):
    ledger.claim("download", record.source, "w", 30)
    ledger.finish(record.id, "download", record.source, "w", "done", sha256="ab" * 32, checksum=checksum)


def test_a_differing_checksum_is_a_new_version_only_against_a_staged_one(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    entry = ("2024-05-01/07_00_00.ulg", 40_000, 1714546800.0)
    [first] = ledger.register("fc", ["out"], True, [entry])
    assert ledger.register("fc", ["out"], True, [entry + ("", "mavftp-crc32:11111111")]) == []  # not staged yet
    staged(ledger, first, "mavftp-crc32:11111111")
    assert ledger.register("fc", ["out"], True, [entry + ("", "mavftp-crc32:11111111")]) == []  # the same bytes
    [second] = ledger.register("fc", ["out"], True, [entry + ("", "mavftp-crc32:22222222")])
    assert second.version == 2 and [t.kind for t in second.tasks] == ["download", "remove", "upload"]
    assert ledger.get(first.id).task("remove").state == "skipped"
    # asked again (a lost reply): version 2 is not staged, so nothing more is registered
    assert ledger.register("fc", ["out"], True, [entry + ("", "mavftp-crc32:22222222")]) == []
    assert ledger.register("fc", ["out"], True, [entry]) == []  # a listing without a checksum: left alone
    ledger.close()


NODE = r"""
import sys
import rospy
rospy.rostime.set_rostime_initialized(True)  # the node's handlers log with rospy; no master is needed for that
from filesync.ledger.store import Ledger
from filesync.msg import FoundFile
from filesync.ros.ledger_node import LedgerServices
from filesync.srv import RegisterRequest
ledger = Ledger(sys.argv[1])
services = LedgerServices(ledger, "")
entry = dict(path="a.ulg", size=10, mtime=1.0)
first = services.register(RegisterRequest("fc", ["out"], True, [FoundFile(**entry)])).changed[0]
ledger.claim("download", "fc", "w", 30)
ledger.finish(first.id, "download", "fc", "w", "done", sha256="ab" * 32, checksum="mavftp-crc32:11111111")
again = services.register(RegisterRequest("fc", ["out"], True, [FoundFile(checksum="mavftp-crc32:22222222", **entry)]))
print([record.version for record in again.changed])
services.close()
"""


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_the_ledger_node_passes_the_checksum_on(tmp_path):
    result = subprocess.run([sys.executable, "-c", NODE, str(tmp_path / "ledger.db")], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path))  # a subprocess: pytest's src/ path hides the messages
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[2]"
