#!/usr/bin/env python3
"""rostest: the `mavros` source against MAVROS's FTP service API, offered by support/fake_mavros.py (MAVROS cannot be
installed here) relaying to a real MAVLink FTP server: MAVSDK acting as an autopilot (support.mavsdk_autopilot).
Some vehicles put the user-space link emulator (support.linkemu) between the stand-in and MAVSDK, with PX4's
one-session rule in front of the server (support.mavsdk_autopilot.Px4SessionRule): a lossy or a 921600-baud link.

Runs in the test workspace of test/mavros_msgs (make test-mavros-msgs-ws), whose md5sums equal mavros_msgs 1.21.0's.
The test node is the supervisor: it starts the autopilots, the MAVROS stand-ins and the filesync nodes as processes.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import rospy
import rostest

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # filesync itself comes from the workspace (devel space)

from filesync.devices import create_source  # noqa: E402
from filesync.devices.base import DeviceContext, local_checksum, mavftp_crc32  # noqa: E402
from filesync.errors import ConfigError, PermanentError, TransientError  # noqa: E402
from filesync.lock import LeaseTable  # noqa: E402
from support.ulog import write_log  # noqa: E402
from filesync.ros.ledger_client import RosLedger  # noqa: E402
from support.nodes import Stack  # noqa: E402
from support.linkemu import LinkEmulator  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4SessionRule  # noqa: E402

SIZES = [0, 1, 239, 240, 478, 35_000, 35_001, 5_000_000]
FAKE_MAVROS = os.path.join(HERE, "support", "fake_mavros.py")
SERIAL = 92160  # bytes/s of a 921600-baud 8N1 serial link


class Vehicle:
    """A MAVSDK autopilot serving `root` and a MAVROS stand-in named `name` (services under /<name>/ftp).

    `link`: LinkEmulator options for a link between the two (PX4's session rule in front of the server), or None
    for plain loopback. The stand-in appends every /ftp/read call to `read_log` ("path offset size" lines).
    """

    def __init__(self, workdir, name, mode, link=None):
        self.name = name
        self.root = os.path.join(workdir, f"{name}-fs")
        self.read_log = os.path.join(workdir, f"{name}-reads.txt")
        os.makedirs(self.root)
        self.autopilot = MavsdkAutopilot(self.root, log_path=os.path.join(workdir, f"{name}-mavsdk.log")).start()
        self.link = None
        if link is not None:
            self.link = LinkEmulator(("127.0.0.1", self.autopilot.port), filters=[Px4SessionRule()], **link).start()
        self.log = open(os.path.join(workdir, f"{name}.log"), "ab")
        url = self.link.url if self.link else self.autopilot.url
        self.process = subprocess.Popen([sys.executable, FAKE_MAVROS, url, mode, f"__name:={name}",
                                         f"_read_log:={self.read_log}"], stdout=self.log, stderr=subprocess.STDOUT)
        rospy.wait_for_service(f"/{name}/ftp/list", timeout=60)

    def reads(self):
        """The /ftp/read calls so far: [(path, offset, size)]."""
        if not os.path.exists(self.read_log):
            return []
        with open(self.read_log) as log:
            return [(path, int(offset), int(size)) for path, offset, size in (line.split() for line in log)]

    def stop(self):
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            if self.link is not None:
                self.link.stop()
            self.autopilot.stop()
            self.log.close()


def read_all(source, path, offset=0, transient_retries=0):
    """Read `path` from `offset`; (sha256, bytes). Like the engine, a TransientError (after the source's own retries)
    may be met by reading on from the bytes already received, up to `transient_retries` times."""
    digest, count = hashlib.sha256(), 0
    while True:
        try:
            for chunk in source.read(path, offset + count):
                digest.update(chunk)
                count += len(chunk)
            return digest.hexdigest(), count
        except TransientError as error:
            if transient_retries <= 0:
                raise
            transient_retries -= 1
            rospy.logwarn("%s: %s; reading on from %d as the engine would", path, error, offset + count)


def engine_retried(call, retries=5):
    """`call()`, tried again after a TransientError up to `retries` times, as the engine retries a listing or a step."""
    for attempt in range(retries + 1):
        try:
            return call()
        except TransientError as error:
            if attempt == retries:
                raise
            rospy.logwarn("%s; trying again as the engine would", error)


class MavrosSourceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rospy.init_node("filesync_mavros_test", anonymous=True)
        cls.workdir = tempfile.mkdtemp(prefix="filesync-mavros-")
        cls.vehicle = Vehicle(cls.workdir, "mavros", "fixed")

    @classmethod
    def tearDownClass(cls):
        cls.vehicle.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.area = os.path.join(self.vehicle.root, self.id().rsplit(".", 1)[-1])
        os.makedirs(self.area)
        self.remote = "/" + os.path.basename(self.area)

    def source(self, **options):
        config = {"kind": "mavros", "root": self.remote, "settle": False}
        config.update(options)
        return create_source("fc", config, DeviceContext(LeaseTable(), "test"))

    def test_md5sums_equal_mavros_msgs_1_21_0(self):
        from mavros_msgs import msg, srv
        expected = {msg.FileEntry: "5ed706bccb946c5b3a5087569cc53ac3", msg.State: "65cd0a9fff993b062b91e354554ec7e9",
                    srv.FileList: "1647c627907cac72fa2d06e0e5f96aac", srv.FileOpen: "99a3f49cc67b91477cf49ff15c42af0e",
                    srv.FileRead: "7700526a6a54d8971e0db6dc1d712523", srv.FileClose: "1c309002d7f7c6df7d3f094925ea8e10",
                    srv.FileChecksum: "c32158e17d9a1a1c682fe19adbd29fac",
                    srv.FileRemove: "1c309002d7f7c6df7d3f094925ea8e10"}
        for kind, md5 in expected.items():
            self.assertEqual(kind._md5sum, md5, kind._type)
        for name in ("FileList", "FileOpen", "FileRead", "FileClose", "FileChecksum", "FileRemove"):
            output = subprocess.run(["rossrv", "md5", f"mavros_msgs/{name}"], capture_output=True, text=True,
                                    timeout=60).stdout.strip()
            self.assertEqual(output, getattr(srv, name)._md5sum, name)

    def test_logs_of_edge_sizes_arrive_identical_and_crc_verified(self):
        expected = {}
        for index, size in enumerate(SIZES):
            path = f"2024-05-0{1 + index % 2}/12_00_{index:02d}.ulg"
            expected[path] = write_log(os.path.join(self.area, path), size, seed=index)
        write_log(os.path.join(self.area, "2024-05-01", "notes.txt"), 10)  # not a log: not listed
        source = self.source()
        listing = {f.path: f for f in source.list()}
        self.assertEqual(set(listing), set(expected))
        for path, digest in expected.items():
            size = os.path.getsize(os.path.join(self.area, path))
            self.assertEqual((listing[path].size, listing[path].complete), (size, True))
            self.assertGreater(listing[path].mtime, 1.7e9)  # from the date path
            started = time.monotonic()
            self.assertEqual(read_all(source, path), (digest, size), path)
            if size >= 1_000_000:
                rospy.loginfo("mavros source: %d bytes in %.1f s (%.0f KB/s)", size, time.monotonic() - started,
                              size / (time.monotonic() - started) / 1000)
            checksum = source.checksum(path)
            self.assertEqual(checksum.algorithm, "mavftp-crc32")
            self.assertEqual(checksum.value, local_checksum(os.path.join(self.area, path), "mavftp-crc32"), path)
        # resume from an offset: only the rest comes
        path = "2024-05-02/12_00_05.ulg"
        with open(os.path.join(self.area, path), "rb") as handle:
            handle.seek(20_000)
            rest = handle.read()
        self.assertEqual(read_all(source, path, 20_000), (hashlib.sha256(rest).hexdigest(), len(rest)))

    def test_a_50_mb_log_arrives_identical_and_crc_verified(self):
        """On loopback the stand-in is fast (about 1.5 MB/s): some 35 s."""
        path = "2024-05-03/12_00_00.ulg"
        local = os.path.join(self.area, path)
        digest = write_log(local, 50_000_000, seed=50)
        source = self.source()
        started = time.monotonic()
        self.assertEqual(read_all(source, path), (digest, 50_000_000))
        rospy.loginfo("mavros source: 50 MB in %.1f s", time.monotonic() - started)
        self.assertEqual(source.checksum(path).value, local_checksum(local, "mavftp-crc32"))

    def test_crc_is_the_mavlink_ftp_variant(self):
        with open(os.path.join(self.area, "check.ulg"), "wb") as handle:
            handle.write(b"123456789")
        self.assertEqual(self.source().checksum("check.ulg").value, 0x2DFD2D88)
        self.assertEqual(mavftp_crc32(b"123456789"), 0x2DFD2D88)

    def test_an_open_reported_as_timed_out_is_closed_and_retried(self):
        """MAVROS 1.21.0 can answer ETIMEDOUT for an open that happened; a plain retry then fails for ever."""
        digest = write_log(os.path.join(self.area, "a.ulg"), 10_000)
        rospy.set_param("/mavros/lost_open_replies", 2)
        try:
            self.assertEqual(read_all(self.source(), "a.ulg"), (digest, 10_000))
            self.assertEqual(rospy.get_param("/mavros/lost_open_replies"), 0)  # both happened
        finally:
            rospy.set_param("/mavros/lost_open_replies", 0)

    def test_busy_mavros_is_retried(self):
        """Another MAVROS user keeps it busy; our calls are refused now and then, and retried."""
        from mavros_msgs.srv import FileChecksum, FileList
        big = "/" + os.path.basename(self.area) + "/big.bin"
        write_log(os.path.join(self.area, "big.bin"), 3_000_000)
        digests = {f"2024-05-01/0{i}_00_00.ulg": write_log(os.path.join(self.area, f"2024-05-01/0{i}_00_00.ulg"),
                                                           30_000, seed=i) for i in range(3)}
        stop, refused = threading.Event(), []
        checksum = rospy.ServiceProxy("/mavros/ftp/checksum", FileChecksum)
        listing = rospy.ServiceProxy("/mavros/ftp/list", FileList)

        def other_client():
            while not stop.is_set():
                for call in (lambda: checksum(big), lambda: listing(self.remote + "/2024-05-01")):
                    try:
                        call()
                    except rospy.ServiceException:
                        refused.append(1)
                stop.wait(0.02)

        thread = threading.Thread(target=other_client)
        thread.start()
        source = self.source(retries=20, retry_wait=0.05)
        try:
            for _ in range(3):
                self.assertEqual({f.path for f in source.list()}, set(digests))
                for path, digest in digests.items():
                    self.assertEqual(read_all(source, path)[0], digest)
                    self.assertEqual(source.checksum(path).value,
                                     local_checksum(os.path.join(self.area, path), "mavftp-crc32"))
        finally:
            stop.set()
            thread.join(30)
        self.assertGreater(len(refused), 0, "the two clients never overlapped: the test proved nothing")

    def test_missing_and_vanished_files_give_clear_reasons(self):
        write_log(os.path.join(self.area, "2024-05-01", "08_00_00.ulg"), 5000)
        source = self.source()
        self.assertEqual([f.path for f in source.list()], ["2024-05-01/08_00_00.ulg"])
        os.remove(os.path.join(self.area, "2024-05-01", "08_00_00.ulg"))  # vanished after the listing
        for call in (lambda: read_all(source, "2024-05-01/08_00_00.ulg"),
                     lambda: source.checksum("2024-05-01/08_00_00.ulg"),
                     lambda: source.stat("2024-05-01/08_00_00.ulg")):
            with self.assertRaisesRegex(PermanentError, "no longer on the vehicle") as caught:
                call()
            self.assertNotIn("\n", str(caught.exception))
        self.assertEqual(list(source.list()), [])
        self.assertEqual(list(self.source(root=self.remote + "/no/such/folder").list()), [])
        # MAVROS still works afterwards: nothing was left open
        write_log(os.path.join(self.area, "b.ulg"), 100)
        self.assertEqual(read_all(source, "b.ulg")[1], 100)

    def test_armed_vehicle_gives_nothing_until_it_disarms(self):
        from mavros_msgs.msg import State
        write_log(os.path.join(self.area, "2024-05-01", "07_00_00.ulg"), 3000)
        source = self.source()

        def wait_state(armed):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = rospy.wait_for_message("/mavros/state", State, timeout=10)
                if state.armed == armed and source._state is not None and source._state.armed == armed:
                    return
                source.probe()
                time.sleep(0.2)
            self.fail(f"/mavros/state never said armed={armed}")

        try:
            source.probe()
            self.vehicle.autopilot.set_armed(True)
            wait_state(True)
            self.assertEqual(list(source.list()), [])
            with self.assertRaisesRegex(TransientError, "armed"):
                read_all(source, "2024-05-01/07_00_00.ulg")
            self.assertEqual([f.path for f in self.source(wait_disarmed=False).list()], ["2024-05-01/07_00_00.ulg"])
            self.vehicle.autopilot.set_armed(False)
            wait_state(False)
            self.assertEqual([f.path for f in source.list()], ["2024-05-01/07_00_00.ulg"])
            self.assertEqual(read_all(source, "2024-05-01/07_00_00.ulg")[1], 3000)
        finally:
            self.vehicle.autopilot.set_armed(False)

    def test_a_growing_file_is_not_complete(self):
        path = os.path.join(self.area, "2024-05-01", "06_00_00.ulg")
        write_log(path, 1000)
        source = self.source(settle=True)
        self.assertEqual([f.complete for f in source.list()], [False])
        with open(path, "ab") as handle:
            handle.write(b"x" * 500)
        self.assertEqual([(f.size, f.complete) for f in source.list()], [(1500, False)])
        self.assertEqual([(f.size, f.complete) for f in source.list()], [(1500, True)])

    def test_bad_options_give_one_line_naming_the_key(self):
        for options, key in [({"namespace": "mavros"}, "namespace"), ({"namespace": "/mavros/"}, "namespace"),
                             ({"root": "fs/log"}, "root"), ({"include": []}, "include"),
                             ({"chunk_bytes": 100}, "chunk_bytes"), ({"retries": 0}, "retries"),
                             ({"vehicle": ""}, "vehicle"), ({"wait_disarmed": "yes"}, "wait_disarmed"),
                             ({"colour": "red"}, "colour")]:
            with self.assertRaises(ConfigError) as caught:
                create_source("fc", dict({"kind": "mavros"}, **options))
            message = str(caught.exception)
            self.assertTrue(message.startswith(f"sources.fc.{key}:") and "\n" not in message, message)

    def test_a_lossy_link_5_and_20_percent_each_way(self):
        """MAVROS never resends: every lost packet fails a call with r_errno 110, and the source must carry on."""
        workdir = tempfile.mkdtemp(prefix="filesync-mavros-lossy-", dir=self.workdir)
        vehicle = Vehicle(workdir, "mavros_lossy", "fixed", link=dict(latency=0.001, seed=3))
        self.addCleanup(vehicle.stop)
        sizes = [0, 1, 239, 240, 478, 35_001]  # MAVROS at 20% loss: about 2 KB/s
        expected = {f"2024-07-01/10_00_{i:02d}.ulg": write_log(os.path.join(vehicle.root, "log", "2024-07-01",
                                                                            f"10_00_{i:02d}.ulg"), size, seed=i)
                    for i, size in enumerate(sizes)}
        for loss in (0.05, 0.20):
            vehicle.link.set_loss(loss)
            lost_before = vehicle.link.up.lost + vehicle.link.down.lost
            source = create_source("fc", {"kind": "mavros", "namespace": "/mavros_lossy", "root": "/log",
                                          "settle": False}, DeviceContext(LeaseTable(), "test"))
            started = time.monotonic()
            listed = engine_retried(lambda: {f.path: f.size for f in source.list()})
            self.assertEqual(listed, dict(zip(expected, sizes)))
            for path, digest in expected.items():
                local = os.path.join(vehicle.root, "log", path)
                self.assertEqual(read_all(source, path, transient_retries=5), (digest, os.path.getsize(local)),
                                 (loss, path))
                self.assertEqual(engine_retried(lambda: source.checksum(path)).value,
                                 local_checksum(local, "mavftp-crc32"), (loss, path))
            lost = vehicle.link.up.lost + vehicle.link.down.lost - lost_before
            rospy.loginfo("mavros source, %d%% loss each way: %d bytes in %.1f s, %d packets lost (up %d, down %d)",
                          loss * 100, sum(sizes), time.monotonic() - started, lost, vehicle.link.up.lost,
                          vehicle.link.down.lost)
            self.assertGreater(lost, 5, "the link lost too little to prove anything")

    # ----- through the real filesync nodes (ledger, lock, finder, downloader, uploader) -----

    def start_nodes(self, name, mode, sizes, link=None):
        """A second vehicle with its own MAVROS stand-in `name`, logs of `sizes`, and the filesync nodes."""
        workdir = tempfile.mkdtemp(prefix="filesync-mavros-nodes-", dir=self.workdir)
        self.out = os.path.join(workdir, "out")
        os.makedirs(self.out)
        self.nodes_vehicle = vehicle = Vehicle(workdir, name, mode, link)
        self.addCleanup(vehicle.stop)
        digests = {f"2024-06-0{1 + i % 3}/13_00_{i:02d}.ulg":
                   write_log(os.path.join(vehicle.root, "log", f"2024-06-0{1 + i % 3}", f"13_00_{i:02d}.ulg"),
                             size, seed=i) for i, size in enumerate(sizes)}
        config = {"staging_dir": os.path.join(workdir, "staging"),
                  "database": os.path.join(workdir, "db", "ledger.db"), "checkpoint_bytes": 64 * 1024,
                  "scan_interval": 0.5, "poll_interval": 1.0, "lease_seconds": 10.0, "retry_base": 0.5,
                  "retry_cap": 2.0,
                  "sources": {"fc": {"kind": "mavros", "namespace": f"/{name}", "root": "/log", "settle": False}},
                  "targets": {"out": {"kind": "folder", "path": self.out}},
                  "pipelines": [{"source": "fc", "targets": ["out"]}]}
        rospy.set_param("/filesync/config", config)
        self.stack = stack = Stack(workdir)
        self.addCleanup(stack.stop_all)  # runs before vehicle.stop
        for node in ("ledger", "lock", "finder", "downloader", "uploader"):
            stack.start(node)
        self.ledger = RosLedger(wait=60)
        return digests

    def records(self):
        try:
            return {record.path: record for record in self.ledger.files()}
        except Exception:  # the ledger node may still be starting
            return {}

    def test_logs_arrive_through_the_nodes(self):
        digests = self.start_nodes("mavros_nodes", "fixed", [0, 1, 239, 240, 35_001, 600_000])
        self.wait_uploaded(digests, 120)

    def wait_uploaded(self, digests, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if len(records) == len(digests) and all(r.state == "uploaded" for r in records.values()):
                break
            time.sleep(0.5)
        self.assertEqual({path: r.state for path, r in records.items()}, {path: "uploaded" for path in digests},
                         [(r.path, r.state, r.error) for r in records.values()])
        for path, digest in digests.items():
            self.assertEqual(local_checksum(os.path.join(self.out, path), "sha256"), digest, path)

    def test_kill_9_of_the_downloader_goes_on_from_its_checkpoint(self):
        """Over a 921600-baud link (slow enough to kill mid-log); the restarted downloader's first read starts at the
        ledger's checkpoint, and only the rest of the file is read again."""
        size = 1_000_000
        digests = self.start_nodes("mavros_kill", "fixed", [size], link=dict(bandwidth=SERIAL, latency=0.001))
        path = next(iter(digests))
        remote = "/log/" + path
        vehicle = self.nodes_vehicle
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = self.records().get(path)
            if record is not None and record.task("download").offset >= 3 * 64 * 1024:
                break
            time.sleep(0.1)
        else:
            self.fail(f"the download never got past 192 KB: {record}")
        self.stack.kill("downloader")
        time.sleep(1.0)  # a read call sent just before the kill is served and logged now
        checkpoint = self.records()[path].task("download").offset
        reads_before = len(vehicle.reads())
        served_before = sum(size for name, _, size in vehicle.reads() if name == remote)
        self.assertGreater(checkpoint, 0)
        self.assertLess(checkpoint, size, "the download ended before the kill: the test proved nothing")
        self.stack.start("downloader")
        self.wait_uploaded(digests, 180)
        after = [(offset, wanted) for name, offset, wanted in vehicle.reads()[reads_before:] if name == remote]
        rospy.loginfo("kill -9 at checkpoint %d of %d; %d bytes asked before, %d after the restart, first read at %d",
                      checkpoint, size, served_before, sum(w for _, w in after), after[0][0] if after else -1)
        self.assertTrue(after, "no read after the restart")
        self.assertEqual(after[0][0], checkpoint, "the restarted downloader did not start at its checkpoint")
        self.assertEqual(min(offset for offset, _ in after), checkpoint)
        self.assertLess(sum(wanted for _, wanted in after), size - checkpoint + 64 * 1024,
                        "the restarted downloader read much more than the rest of the file")

    def test_empty_read_bug_gives_the_clear_error_and_keeps_the_file_waiting(self):
        digests = self.start_nodes("mavros_legacy", "legacy", [35_001])
        path = next(iter(digests))
        deadline = time.monotonic() + 90
        record = None
        while time.monotonic() < deadline:
            record = self.records().get(path)
            if record is not None and record.error:
                break
            time.sleep(0.5)
        self.assertIsNotNone(record, "the file was never found")
        self.assertRegex(record.error, r"empty-read bug of MAVROS <= 1\.21\.0.*`mavlink` source")
        self.assertNotIn("\n", record.error)
        time.sleep(3)  # a few retries later: still waiting, nothing marked downloaded, nothing delivered
        record = self.records()[path]
        self.assertEqual(record.state, "found", (record.state, record.error))
        self.assertFalse(os.path.exists(os.path.join(self.out, path)))


if __name__ == "__main__":
    rostest.rosrun("filesync", "mavros_source", MavrosSourceTest, sys.argv)
