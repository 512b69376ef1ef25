"""filesync's nodes on ROS 2 (rclpy over Fast DDS) under `filesync-ros2 run`, against a real pyftpdlib server: a whole
pipeline folder -> FTP, kill -9 of the downloader and the uploader in the middle of a file (the supervisor starts them
again and the transfer resumes from its checkpoint), the status topic's and the events' QoS, /diagnostics, and a
restart of the ledger node."""
import json
import os
import time
import urllib.request

from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from filesync.ros2.messages import STATUS_QOS, msg
from support.ros2_stack import CHECKPOINT, MiB, all_uploaded, assert_arrived, wait_for, write_inbox
from support.ros2_stack import scene, test_node  # noqa: F401 - fixtures


def task_offset(scene, path, kind):
    """Bytes the ledger holds as checkpointed for `path`'s task of `kind` (0 before any)."""
    for record in scene.ledger.files():
        if record.path == path:
            return max([task.offset for task in record.tasks if task.kind == kind and task.state == "active"],
                       default=0)
    return 0


def test_a_folder_goes_to_ftp_and_killed_workers_resume_their_file(scene):
    scene.stack.start()
    sizes = [0, 1, 1000, 300 * 1024, 10 * MiB]  # the last takes about 5 s each way at bwlimit
    paths = write_inbox(scene, sizes)
    big = paths[-1]
    killed = {}
    for node, kind in (("downloader", "download"), ("uploader", "upload")):
        wait_for(lambda: task_offset(scene, big, kind) >= 2 * CHECKPOINT, 120, f"no {kind} of {big} under way")
        killed[node] = scene.stack.kill(node)
        restarted = wait_for(lambda: scene.stack.node(node), 30, f"{node} not started again")
        assert restarted.pid != killed[node]
    wait_for(lambda: all_uploaded(scene, len(paths)), 180, "not every file uploaded")
    assert_arrived(scene, paths)
    # the upload resumed from its checkpoint: at most one checkpoint interval crossed the wire twice
    resent = sum(event["received"] for event in scene.server.events("STOR")) - sum(sizes)
    assert 0 <= resent <= CHECKPOINT, resent
    assert "starting it again" in open(os.path.join(scene.workdir, "supervisor.log")).read()


def test_status_is_latched_diagnostics_name_each_device_and_the_ledger_restarts(scene):
    old_log = scene.workdir / "ros_log" / "old_run" / "ledger_1_1.log"  # the stack's ROS_LOG_DIR
    old_log.parent.mkdir(parents=True)
    old_log.write_bytes(b"x" * (2 * MiB))
    os.utime(old_log, (time.time() - 3600,) * 2)
    scene.stack.start()
    paths = write_inbox(scene, [1000, 2000])
    wait_for(lambda: all_uploaded(scene, len(paths)), 120, "not every file uploaded")
    topics = {"/filesync/status": (DurabilityPolicy.TRANSIENT_LOCAL, ReliabilityPolicy.RELIABLE),
              "/filesync/events": (DurabilityPolicy.VOLATILE, ReliabilityPolicy.RELIABLE),
              "/filesync/wake": (DurabilityPolicy.VOLATILE, ReliabilityPolicy.RELIABLE)}
    for topic, (durability, reliability) in topics.items():
        publishers = wait_for(lambda: scene.node.get_publishers_info_by_topic(topic), 30, f"no publisher of {topic}")
        assert {(p.qos_profile.durability, p.qos_profile.reliability) for p in publishers} == {(durability,
                                                                                               reliability)}, topic
    # the worker nodes wake each other on /filesync/wake and leave /filesync/events to people and views
    workers = {"finder", "downloader", "uploader"}

    def subscribers():  # once DDS discovery has named every subscriber (it shows _NODE_NAME_UNKNOWN_ before)
        found = {topic: {info.node_name for info in scene.node.get_subscriptions_info_by_topic(topic)}
                 for topic in ("/filesync/events", "/filesync/wake")}
        named = not any("_NODE_NAME_UNKNOWN_" in names for names in found.values())
        return found if named and workers <= found["/filesync/wake"] else None
    listening = wait_for(subscribers, 30, "the worker nodes never showed as subscribers of /filesync/wake")
    assert listening["/filesync/events"] & workers == set(), listening
    assert listening["/filesync/wake"] & workers == workers, listening
    # a subscriber that comes late gets the last status at once, as from a latched ROS 1 topic
    statuses, diagnostics = [], []
    status_subscription = scene.node.create_subscription(msg.Status, "/filesync/status", statuses.append, STATUS_QOS)
    from diagnostic_msgs.msg import DiagnosticArray
    diagnostics_subscription = scene.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        wait_for(lambda: statuses and statuses[-1].pipelines[0].uploaded == 2, 15, "no status with 2 uploaded")
        names = {"/filesync/status: source inbox", "/filesync/status: target ftp", "/filesync/status: staging",
                 "/filesync/status: ledger"}
        # every device OK once the workers' reports are in (the first arrays may still call a target STALE)
        def all_ok():
            last = diagnostics[-1] if diagnostics else None
            return last if last and all(status.level == b"\x00" for status in last.status) else None

        try:
            array = wait_for(all_ok, 20, "/diagnostics not all OK")
        except AssertionError:
            raise AssertionError([(status.name, status.level, status.message) for status in
                                  (diagnostics[-1].status if diagnostics else [])]) from None
        assert {status.name for status in array.status} == names
        assert all(status.hardware_id == "filesync" for status in array.status)
        # the web node's page shows the same status (the status topic through filesync.ui's view)
        with urllib.request.urlopen(f"http://127.0.0.1:{scene.web_port}/api/status", timeout=10) as reply:
            view = json.load(reply)
        assert view["ledger_ok"] and view["pipelines"][0]["counts"] == "uploaded 2", view
        # the ledger node dies: the supervisor starts it again, the workers carry on with new files
        old = scene.stack.kill("ledger")
        assert scene.stack.node("ledger").pid != old
        more = write_inbox(scene, [3000, 4000, 5000], prefix="g")
        wait_for(lambda: all_uploaded(scene, len(paths) + len(more)), 120, "files after the ledger's restart")
        assert_arrived(scene, paths + more)
        wait_for(lambda: statuses[-1].ledger_ok and statuses[-1].pipelines[0].uploaded == 5, 15,
                 "the status does not show the ledger back")
        # the status node keeps the ROS log folder under ros_log_max_total_bytes, the oldest files first
        assert not old_log.exists()
    finally:
        scene.node.destroy_subscription(status_subscription)
        scene.node.destroy_subscription(diagnostics_subscription)
