"""filesync.ros.convert builds messages from positional values (cheaper than keywords on every claim and finish
reply): a record with a distinct value in every field must come back whole through the wire format."""
import subprocess
import sys

import pytest

from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced

ROUND_TRIP = r"""
import io
from filesync.ledger.store import FileRecord, TaskRecord
from filesync.ros.convert import record_from_msg, record_to_msg, task_to_msg
from filesync.srv import ClaimResponse

tasks = [TaskRecord(7, "download", "inbox", "done", 1000, 2, 12.5, "slow link", "w1/download", "/staging/a.bin", ""),
         TaskRecord(7, "upload", "ftp", "active", 600, 1, 99.25, "timed out", "w2/upload", "ftp://host/a.bin",
                    '{"upload_id": "u1"}')]
record = FileRecord(7, "inbox", "dir/a.bin", 1000, 1700000000.5, "uploading", "late", version=3, sha256="ab" * 32,
                    checksum="mavftp-crc32:2dfd2d88", tasks=tasks)
reply = ClaimResponse(found=True, file=record_to_msg(record), task=task_to_msg(tasks[1]))
buffer = io.BytesIO()
reply.serialize(buffer)
back = ClaimResponse().deserialize(buffer.getvalue())
assert record_from_msg(back.file) == record, (record_from_msg(back.file), record)
assert (back.task.kind, back.task.owner, back.task.location, back.task.offset, back.task.note) == \
    ("upload", "w2/upload", "ftp://host/a.bin", 600, '{"upload_id": "u1"}'), back.task
print("ok")
"""


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_a_record_comes_back_whole_through_a_claim_reply(tmp_path):
    # a subprocess: pytest's src/ path would hide the generated messages
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP], capture_output=True, text=True, timeout=120,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
