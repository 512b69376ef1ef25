#!/usr/bin/env python3
"""rostest: /filesync/status and /diagnostics from the real nodes while real transfers run against a real FTP server.

The test starts the nodes as processes (as roslaunch would), watches both topics, takes the FTP server away and
brings it back, and checks what the status and the diagnostics say at each moment.
"""
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # filesync itself comes from the workspace (devel space), which adds the messages

from conftest import write_file_whole  # noqa: E402
from filesync.msg import Status  # noqa: E402
from support.nodes import Stack  # noqa: E402
from support.ftp_server import FtpServerProcess  # noqa: E402

MiB = 1 << 20
SIZE = 2 * MiB


class Watch:
    """The latest /filesync/status and the latest level and message of each diagnostic, by the name's last part."""

    def __init__(self):
        self.status = None
        self.diagnostics = {}
        self.condition = threading.Condition()
        rospy.Subscriber("/filesync/status", Status, self._on_status, queue_size=5)
        rospy.Subscriber("/diagnostics", DiagnosticArray, self._on_diagnostics, queue_size=20)

    def _on_status(self, message):
        with self.condition:
            self.status = message
            self.condition.notify_all()

    def _on_diagnostics(self, message):
        with self.condition:
            for status in message.status:
                self.diagnostics[status.name.split(": ", 1)[-1]] = status
            self.condition.notify_all()

    def wait_for(self, predicate, timeout, what):
        """Wait until predicate(self) is true; fail with `what` and the last status otherwise."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                try:
                    if predicate(self):
                        return
                except (AttributeError, IndexError, KeyError, StopIteration, TypeError):
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what} not seen in {timeout} s; last status: {self.status}; "
                                         f"diagnostics: {[(k, d.level, d.message) for k, d in self.diagnostics.items()]}")
                self.condition.wait(min(left, 1.0))


class StatusTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rospy.init_node("filesync_status_test", anonymous=True)

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="filesync-rostest-status-")
        self.server = FtpServerProcess(os.path.join(self.workdir, "ftp_root"),
                                       os.path.join(self.workdir, "ftp.log")).start()
        self.inbox = os.path.join(self.workdir, "inbox")
        os.makedirs(self.inbox)
        rospy.set_param("/filesync/config", {
            "staging_dir": os.path.join(self.workdir, "staging"),
            "database": os.path.join(self.workdir, "db", "ledger.db"),
            "log_dir": os.path.join(self.workdir, "logs"),
            "checkpoint_bytes": 256 * 1024, "scan_interval": 0.5, "poll_interval": 1.0, "lease_seconds": 10.0,
            "retry_base": 0.2, "retry_cap": 1.0, "unreachable_warn_seconds": 3.0,
            # 256 KiB/s per transfer (throttled by the sender, so socket buffers do not hide the progress): each
            # 2 MiB file is in flight for about eight seconds of 1 Hz status
            "bwlimit": 256 * 1024,
            "sources": {"inbox": {"kind": "folder", "path": self.inbox, "min_age": 0.0}},
            "targets": {"ftp": self.server.target_options("/up")},
            "pipelines": [{"source": "inbox", "targets": ["ftp"]}],
        })
        self.stack = Stack(self.workdir)
        self.stack.TYPES = dict(Stack.TYPES, status="status_node")
        for name in ("ledger", "lock", "finder", "downloader", "uploader", "status"):
            self.stack.start(name)
        self.watch = Watch()

    def tearDown(self):
        self.stack.stop_all()
        self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def test_status_and_diagnostics_follow_transfers_and_a_lost_server(self):
        watch = self.watch
        watch.wait_for(lambda w: w.status.ledger_ok and w.diagnostics["target ftp"].level == DiagnosticStatus.OK,
                       120, "a first status with the ledger answering")
        self.assertEqual([(link.role, link.name) for link in watch.status.links], [("source", "inbox"),
                                                                                    ("target", "ftp")])
        for index in range(4):
            write_file_whole(os.path.join(self.inbox, f"flight{index}.ulg"), SIZE)

        def uploading(w):
            transfer = next(t for t in w.status.transfers if t.kind == "upload")
            return 0 < transfer.bytes_done < transfer.bytes_total and transfer.rate > 0 and transfer.eta > 0

        watch.wait_for(uploading, 120, "an upload in progress with a rate and an ETA")
        with watch.condition:
            status = watch.status
            pipeline = status.pipelines[0]
            transfer = next(t for t in status.transfers if t.kind == "upload")
            target = watch.diagnostics["target ftp"]
        self.assertEqual((pipeline.source, list(pipeline.targets)), ("inbox", ["ftp"]))
        counted = sum(getattr(pipeline, state) for state in ("found", "downloading", "downloaded", "uploading",
                                                             "uploaded", "removed", "failed", "skipped"))
        self.assertEqual(counted, 4)
        self.assertGreaterEqual(pipeline.uploading, 1)
        self.assertEqual(pipeline.files_waiting, 4 - pipeline.uploaded)
        self.assertEqual(pipeline.bytes_waiting, pipeline.files_waiting * SIZE)  # every file has the same size
        self.assertEqual(status.bytes_waiting, pipeline.bytes_waiting)
        self.assertEqual((transfer.source, transfer.device, transfer.bytes_total), ("inbox", "ftp", SIZE))
        self.assertTrue(transfer.path.startswith("flight"))
        self.assertLess(transfer.rate, MiB)  # the server takes 256 KiB/s; a rate far above it would be wrong
        self.assertGreater(status.rate, 0)
        self.assertGreater(status.staging_free_bytes, 0)
        self.assertEqual(target.level, DiagnosticStatus.OK)

        watch.wait_for(lambda w: w.status.pipelines[0].uploaded == 4 and not w.status.transfers, 120,
                       "all four uploaded")
        self.assertEqual((watch.status.bytes_waiting, watch.status.pipelines[0].files_waiting), (0, 0))

        # the server goes away: the next upload finds it unreachable; after 3 s the target's diagnostic warns
        self.server.stop()
        write_file_whole(os.path.join(self.inbox, "late.ulg"), SIZE)
        watch.wait_for(lambda w: not w.status.links[1].up, 120, "the target's link down on the status")
        self.assertTrue(watch.status.links[1].reason)
        self.assertTrue(watch.status.last_error)
        watch.wait_for(lambda w: w.diagnostics["target ftp"].level == DiagnosticStatus.WARN, 60,
                       "the target's diagnostic at WARN")
        self.assertIn("unreachable for", watch.diagnostics["target ftp"].message)
        self.assertEqual(watch.diagnostics["source inbox"].level, DiagnosticStatus.OK)
        self.assertEqual(watch.status.pipelines[0].files_waiting, 1)
        self.assertEqual(watch.status.bytes_waiting, SIZE)

        self.server.start()
        watch.wait_for(lambda w: w.diagnostics["target ftp"].level == DiagnosticStatus.OK and w.status.links[1].up,
                       120, "the target's diagnostic back to OK")
        watch.wait_for(lambda w: w.status.pipelines[0].uploaded == 5 and w.status.bytes_waiting == 0, 120,
                       "the late file uploaded")
        # filesync's own log file, bounded and per node name, holds the outage
        with open(os.path.join(self.workdir, "logs", "filesync_uploader.log"), encoding="utf-8") as log:
            self.assertIn("unreachable", log.read())

    def test_ledger_away_shows_on_status_and_diagnostics(self):
        watch = self.watch
        watch.wait_for(lambda w: w.status.ledger_ok, 120, "the ledger answering")
        self.stack.kill("ledger")
        watch.wait_for(lambda w: not w.status.ledger_ok and w.diagnostics["ledger"].level == DiagnosticStatus.ERROR,
                       60, "the ledger's absence")
        self.stack.start("ledger")
        watch.wait_for(lambda w: w.status.ledger_ok and w.diagnostics["ledger"].level == DiagnosticStatus.OK,
                       120, "the ledger back")


if __name__ == "__main__":
    rostest.rosrun("filesync", "status", StatusTest)
