"""The ledger node claims and records small files in batches too (issue 18): its claim_batch and finish_batch services,
called as the workers' RosLedger calls them (LedgerMethods' requests handed to the node's handlers with ROS 1's
messages), answer what Ledger.claim_batch and finish_batch do, and the same again when a request is sent twice (a
reply lost to a killed ledger node), as claim and finish do."""
import json
import subprocess
import sys

import pytest

from filesync.ledger.store import Ledger
from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced

SMALL = 1000
NODE = r"""
import json, sys
import rospy
rospy.rostime.set_rostime_initialized(True)  # the node's handlers log with rospy; no master is needed for that
from filesync.ledger.store import Ledger
from filesync.ros.convert import ROS1
from filesync.ros.ledger_client import SERVICES
from filesync.ros.ledger_node import LedgerServices
from filesync.ros_common.ledger_client import LedgerMethods


class Direct(LedgerMethods):
    # RosLedger's requests handed to the ledger node's handlers without a network; each call's service noted
    def __init__(self, services):
        super().__init__(ROS1)
        self.services, self.calls = services, []

    def _call(self, name, **fields):
        self.calls.append(name)
        return getattr(self.services, name)(SERVICES[name]._request_class(**fields))


SMALL = int(sys.argv[2])
services = LedgerServices(Ledger(sys.argv[1]), "")
client = Direct(services)
client.register("inbox", ["out"], False, [(f"{i}.bin", 100, 1.0) for i in range(5)] + [("big.bin", 10 * SMALL, 1.0)])
first = client.claim_batch("download", "inbox", "w", 30.0, 8, SMALL)
again = client.claim_batch("download", "inbox", "w", 30.0, 8, SMALL)  # sent again: its reply was lost
other = client.claim_batch("download", "inbox", "v", 30.0, 8, SMALL)
changes = services.changes
idle = client.claim_batch("download", "inbox", "u", 30.0, 8, SMALL)
idle_changes = services.changes - changes
ends = [(r.id, "download", "inbox", "w", "done", "", "", None, "ab" * 32, f"mavftp-crc32:0000000{r.id}")
        for r, _ in first]
ends.append((other[0][0].id, "download", "inbox", "w", "retry", "not w's", "", 5.0, "", ""))
finished = client.finish_batch(ends)
repeated = client.finish_batch(ends)  # sent again: its reply was lost
claimed = lambda pairs: [(r.path, t.kind, t.state, t.owner) for r, t in pairs]
ended = lambda records: [r and (r.path, r.sha256, r.checksum, r.task("download").state) for r in records]
print(json.dumps(dict(first=claimed(first), again=claimed(again), other=claimed(other), idle=claimed(idle),
                      idle_changes=idle_changes, finished=ended(finished), repeated=ended(repeated),
                      calls=client.calls)))
services.close()
"""


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_the_ledger_nodes_batch_services_claim_and_record_small_files_together_and_a_resend_answers_the_same(tmp_path):
    database = str(tmp_path / "ledger.db")
    result = subprocess.run([sys.executable, "-c", NODE, database, str(SMALL)], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path))  # a subprocess: pytest's src/ path hides the messages
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    small = [f"{i}.bin" for i in range(5)]
    # the small files in one call, in order; the big one is left for the next claim, which takes it alone
    assert seen["first"] == [[path, "download", "active", "w"] for path in small]
    assert seen["again"] == seen["first"]
    assert seen["other"] == [["big.bin", "download", "active", "v"]]
    assert seen["idle"] == [] and seen["idle_changes"] == 0  # a claim that found nothing costs the status no recount
    done = [[path, "ab" * 32, f"mavftp-crc32:0000000{i + 1}", "done"] for i, path in enumerate(small)]
    assert seen["finished"] == done + [None]  # v's task is not w's to finish
    assert seen["repeated"] == seen["finished"]
    assert seen["calls"] == ["register"] + ["claim_batch"] * 4 + ["finish_batch"] * 2
    ledger = Ledger(database)
    try:
        assert [ledger.get(i).task("download").state for i in range(1, 7)] == ["done"] * 5 + ["active"]
        assert ledger.get(6).task("download").attempts == 0  # the retry of a task w does not hold was not recorded
    finally:
        ledger.close()


def test_a_worker_asking_again_for_its_batch_gets_all_it_holds_back(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        ledger.register("inbox", ["out"], False, [(f"{i}.bin", 100, 1.0) for i in range(16)])
        first = ledger.claim_batch("download", "inbox", "w", 30.0, 8, SMALL, workers=2)
        assert len(first) == 8
        # fewer wait now (8), so the worker's part of them would be 4: what it holds still comes back whole
        again = ledger.claim_batch("download", "inbox", "w", 30.0, 8, SMALL, workers=2)
        assert [record.id for record, _ in again] == [record.id for record, _ in first]
        assert len(ledger.claim_batch("download", "inbox", "v", 30.0, 8, SMALL, workers=2)) == 4
    finally:
        ledger.close()
