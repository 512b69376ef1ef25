#!/usr/bin/env python3
"""rostest: the filesync nodes against a real roscore and a real pyftpdlib server.

The test is the supervisor: it starts each node as its own process (as roslaunch would), kills them with SIGKILL at
random moments during transfers, starts them again, and checks on the FTP server's side that every file arrived once,
identical, with at most one checkpoint interval sent again per interruption.
"""
import os
import functools
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import Counter

import rosgraph
import rospy
import rostest

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # filesync itself comes from the workspace (devel space), which adds the messages

from conftest import write_file_whole  # noqa: E402
from filesync.msg import FileEvent, Status  # noqa: E402
from filesync.ros.ledger_client import SERVICES as LEDGER_SERVICES, RosLedger  # noqa: E402
from filesync.ros.node import RosLeaseClient  # noqa: E402
from support.ftp_server import FtpServerProcess  # noqa: E402
from support.launch import wait_keepalive_resets  # noqa: E402
from support.leases import overlaps_between  # noqa: E402
from support.nodes import Stack, node_command  # noqa: E402,F401 (Stack: also imported from here by others)
from filesync.devices.base import local_checksum

MiB = 1 << 20
CHECKPOINT = 256 * 1024
SEED = int(os.environ.get("FILESYNC_TEST_SEED", "11"))



class CountingLedger:
    """Serves the ledger's services under `namespace` and passes each call on to the ledger node, counting the calls
    and the tasks each carried (a claim: the tasks it took; a finish: the outcomes it recorded). Nodes remapped to it
    (`remaps`) reach the ledger through it."""

    def __init__(self, namespace):
        self.calls, self.tasks = Counter(), Counter()
        self._lock = threading.Lock()
        self.remaps = [f"/filesync/ledger/{name}:={namespace}/{name}" for name in LEDGER_SERVICES]
        for name in LEDGER_SERVICES:
            rospy.wait_for_service(f"/filesync/ledger/{name}", timeout=60)
        self._services = [rospy.Service(f"{namespace}/{name}", kind, functools.partial(self._pass_on, name, kind))
                          for name, kind in LEDGER_SERVICES.items()]

    def _pass_on(self, name, kind, request):
        reply = rospy.ServiceProxy(f"/filesync/ledger/{name}", kind)(request)
        carried = {"claim": lambda: int(reply.found), "claim_batch": lambda: len(reply.files), "finish": lambda: 1,
                   "finish_batch": lambda: len(request.outcomes)}.get(name, lambda: 0)()
        with self._lock:
            if carried:
                self.calls[name] += 1
                self.tasks[name] += carried
        return reply

    def close(self):
        for service in self._services:
            service.shutdown()


class NodesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rospy.init_node("filesync_node_test", anonymous=True)

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="filesync-rostest-")
        self.server = FtpServerProcess(os.path.join(self.workdir, "ftp_root"),
                                       os.path.join(self.workdir, "ftp.log")).start()
        self.inbox = os.path.join(self.workdir, "inbox")
        os.makedirs(self.inbox)
        self.config = {
            "staging_dir": os.path.join(self.workdir, "staging"),
            "database": os.path.join(self.workdir, "db", "ledger.db"),
            "checkpoint_bytes": CHECKPOINT, "scan_interval": 0.5, "poll_interval": 2.0, "lease_seconds": 5.0,
            "retry_base": 0.2, "retry_cap": 2.0, "bwlimit": 1 * MiB,  # per transfer, 4 at once (the default)
            "sources": {"inbox": {"kind": "folder", "path": self.inbox, "min_age": 0.0}},
            "targets": {"ftp": self.server.target_options("/up")},
            "pipelines": [{"source": "inbox", "targets": ["ftp"]}],
        }
        rospy.set_param("/filesync/config", self.config)
        self.stack = Stack(self.workdir)
        self.ledger = RosLedger(wait=60)

    def tearDown(self):
        self.stack.stop_all()
        self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def write_inbox(self, sizes, stem="f"):
        """Files written whole, then renamed into the inbox (min_age is 0 here: a file listed while still being
        written would be a version of its own, correctly, but not what these tests count)."""
        paths = [f"d{i % 3}/{stem}{i:02d}.bin" for i in range(len(sizes))]
        for path, size in zip(paths, sizes):
            write_file_whole(os.path.join(self.inbox, path), size, seed=path)
        return paths

    def wait_all(self, count, state="uploaded", timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                records = self.ledger.files()
            except Exception:
                records = []
            if len(records) == count and all(r.state == state for r in records):
                return records
            time.sleep(0.5)
        self.fail(f"not all {count} files {state} after {timeout} s: "
                  f"{[(r.path, r.state, r.error) for r in records if r.state != state][:5]}")

    def assert_arrived(self, paths):
        for path in paths:
            stored = os.path.join(self.server.root, "up", path)
            self.assertTrue(os.path.exists(stored), path)
            self.assertEqual(local_checksum(stored, "sha256"), local_checksum(os.path.join(self.inbox, path), "sha256"), path)
        publications = Counter(e["path"] for e in self.server.events("RNTO"))
        self.assertEqual(sorted(publications.values()), [1] * len(paths), publications)

    def test_kill_9_of_each_node_mid_transfer(self):
        rng = random.Random(SEED)
        sizes = [rng.randrange(0, 6 * MiB) for _ in range(12)] + [0, 1, 24 * MiB]
        events = []
        subscriber = rospy.Subscriber("/filesync/events", FileEvent, events.append)
        for name in ("ledger", "lock", "finder", "downloader", "uploader"):
            self.stack.start(name)
        deadline = time.monotonic() + 60  # a message sent before the subscription connects is not delivered
        while subscriber.get_num_connections() < 3:
            self.assertLess(time.monotonic(), deadline, "the nodes do not publish /filesync/events")
            time.sleep(0.1)
        paths = self.write_inbox(sizes)
        kills = Counter()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and sum(kills.values()) < 18:
            time.sleep(rng.uniform(0.8, 2.5))
            victim = rng.choice(["downloader", "uploader", "ledger"])
            self.stack.kill(victim)
            kills[victim] += 1
            time.sleep(rng.uniform(0.0, 1.0))
            self.stack.start(victim)
            records = self.ledger.files()
            if len(records) == len(paths) and all(r.state == "uploaded" for r in records):
                break
        self.wait_all(len(paths))
        self.assert_arrived(paths)
        resent = sum(e["received"] for e in self.server.events("STOR")) - sum(sizes)
        rospy.loginfo(f"kills {dict(kills)}, bytes sent again {resent}")
        self.assertGreaterEqual(min(kills[name] for name in ("downloader", "uploader", "ledger")), 2, kills)
        self.assertGreaterEqual(resent, 0)
        self.assertLessEqual(resent, sum(kills.values()) * CHECKPOINT)
        states = {e.state for e in events}
        self.assertTrue({"found", "downloaded", "uploaded"} <= states, states)
        uploaded = [e for e in events if e.task == "upload" and e.task_state == "done"]
        self.assertTrue(all(e.location.startswith("ftp://") and e.bytes_done == e.size for e in uploaded))

    def test_a_ledger_restarted_while_the_workers_idle_never_jams_them(self):
        """The ledger is killed (and started again) while the workers idle. Their connections to the dead one that
        they use only when a file moves (register, checkpoint, finish; claim is asked every poll) are reset by
        rospy's TCP keepalive about a minute later; rospy then raised TransportTerminated and kept the closed
        connection, so every later call failed ('NoneType' object has no attribute 'tell'). The next file must be
        delivered, and the status node (its parked-files query is such a connection) go on."""
        statuses = []
        rospy.Subscriber("/filesync/status", Status, statuses.append)
        for name in ("ledger", "lock", "finder", "downloader", "uploader", "status"):
            self.stack.start(name)
        first = self.write_inbox([200_000])
        self.wait_all(1)
        master = rosgraph.Master(rospy.get_name())
        old_port = int(master.lookupService("/filesync/ledger/register").rsplit(":", 1)[1])
        self.stack.kill("ledger")
        self.stack.start("ledger")
        broken, waited = wait_keepalive_resets(old_port)  # the one long wait: see its docstring
        rospy.loginfo(f"{broken} connections to the killed ledger reset after {waited:.0f} s")
        self.assertGreater(broken, 0, "no connection to the killed ledger was left")
        second = self.write_inbox([300_000], stem="after")
        delivered = os.path.join(self.server.root, "up", second[0])
        deadline = time.monotonic() + 60  # seen on the FTP server: this test's own ledger client had a reset too
        while not os.path.exists(delivered):
            self.assertLess(time.monotonic(), deadline, f"{second[0]} not delivered after the ledger's restart")
            time.sleep(0.2)
        self.wait_all(2)
        self.assert_arrived(first + second)
        shown = time.monotonic()
        while not statuses or statuses[-1].pipelines[0].uploaded != 2:
            self.assertLess(time.monotonic() - shown, 30, "the status node does not show the second file")
            time.sleep(0.2)

    def test_small_files_are_claimed_and_recorded_in_batches_through_the_nodes(self):
        """The workers reach the ledger through its services; small files go in batches there too (issue 18): far
        fewer calls than the one claim and one finish per step of a file that each task cost one by one."""
        files = 48
        self.stack.start("ledger")
        counting = CountingLedger("/filesync/counted_ledger")
        heard = {"events": 0, "wake": 0}

        def count(topic):
            return lambda _event: heard.update({topic: heard[topic] + 1})
        listeners = [rospy.Subscriber(f"/filesync/{topic}", FileEvent, count(topic), queue_size=1000)
                     for topic in heard]
        try:
            for name in ("finder", "downloader", "uploader"):
                self.stack.start(name, counting.remaps)
            paths = self.write_inbox([2000 + i for i in range(files)], stem="small")
            self.wait_all(files)
            self.assert_arrived(paths)
            # the worker nodes wake each other on /filesync/wake and leave /filesync/events to people and views
            _, subscribed, _ = rosgraph.Master("/filesync_test").getSystemState()
            listening = {topic: set(nodes) for topic, nodes in subscribed}
            workers = {"/filesync/finder", "/filesync/downloader", "/filesync/uploader"}
            self.assertEqual(listening.get("/filesync/events", set()) & workers, set())
            self.assertEqual(listening.get("/filesync/wake", set()) & workers, workers)
        finally:
            counting.close()
            for listener in listeners:
                listener.unregister()
        rospy.loginfo(f"events heard: {heard}")
        # found, downloaded and uploaded of 48 files arrive in bursts: a wake or two a burst, not one a file (one run:
        # 18 wakes, 182 events heard)
        self.assertGreater(heard["wake"], 0)
        self.assertLess(heard["wake"], files)
        rospy.loginfo(f"ledger calls that carried tasks: {dict(counting.calls)}; tasks: {dict(counting.tasks)}")
        self.assertEqual(counting.calls["claim"], 0, "a small file was claimed alone")
        self.assertEqual(counting.tasks["claim_batch"], 2 * files)  # each download and upload claimed once
        self.assertEqual(counting.tasks["finish"] + counting.tasks["finish_batch"], 2 * files)
        per_file = sum(counting.calls.values()) / files
        self.assertLessEqual(per_file, 2.0, f"{per_file:.2f} ledger calls a file (one by one: 4)")

    def test_corrupt_database_at_start_uploads_nothing_again(self):
        paths = self.write_inbox([1000, 200_000, 3 * MiB])
        for name in ("ledger", "finder", "downloader", "uploader"):
            self.stack.start(name)
        self.wait_all(len(paths))
        stors_before = len(self.server.events("STOR"))
        self.stack.stop_all()
        with open(self.config["database"], "wb") as database:
            database.write(b"not a database at all" * 200)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.config["database"] + suffix):
                os.remove(self.config["database"] + suffix)
        for name in ("ledger", "finder", "downloader", "uploader"):
            self.stack.start(name)
        self.wait_all(len(paths))
        self.assertEqual(len(self.server.events("STOR")), stors_before)
        self.assert_arrived(paths)
        kept = [n for n in os.listdir(os.path.dirname(self.config["database"])) if ".corrupt-" in n]
        self.assertTrue(kept, "the corrupt database was not kept")

    def test_the_lock_holds_one_client_and_frees_a_dead_holders_lease(self):
        self.stack.start("lock")
        client = RosLeaseClient()
        rospy.wait_for_service("/filesync/lock/acquire", 30)
        owners = [f"client{i}" for i in range(3)]
        self.assertEqual(overlaps_between(client, "px4:1", owners, rounds=8, hold=0.01, poll=0.02, timeout=60), [])
        holder = subprocess.Popen([sys.executable, "-c", (
            "import rospy, time\n"
            "from filesync.srv import Acquire\n"
            "rospy.init_node('holder', anonymous=True)\n"
            "rospy.wait_for_service('/filesync/lock/acquire')\n"
            "print(rospy.ServiceProxy('/filesync/lock/acquire', Acquire)('px4:1', 'holder', 3.0).granted, flush=True)\n"
            "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
        self.assertEqual(holder.stdout.readline().strip(), "True")
        holder.kill()
        holder.wait()
        refused = client.acquire("px4:1", "downloader", 5)
        self.assertFalse(refused.granted)
        self.assertEqual(refused.holder, "holder")
        time.sleep(refused.expires_in + 0.2)
        granted = client.acquire("px4:1", "downloader", 5)
        self.assertTrue(granted.granted)
        self.assertGreater(granted.token, refused.token)

    def test_bad_config_exits_with_one_line_naming_the_key(self):
        bad = dict(self.config, checkpoint_bytes=-5)
        rospy.set_param("/filesync/config", bad)
        result = subprocess.run(node_command("ledger_node") + ["__ns:=/filesync", "__name:=ledger"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertIn("checkpoint_bytes: must be above 0, got -5", lines[-1])
        rospy.delete_param("/filesync/config")
        result = subprocess.run(node_command("finder_node") + ["__ns:=/filesync", "__name:=finder"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn("/filesync/config is not set", result.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    rostest.rosrun("filesync", "nodes", NodesTest)
