"""The ROS 2 ledger client (filesync.ros2.ledger_client.RosLedger) against a ledger that is slow, not gone: a call whose
reply takes longer than the client's resend interval (a register of a large first scan) must still end, with its
first reply. A client that dropped the request it sent before each resend would never see a reply: the server,
answering one request at a time, would always be busy with one the client had given up. And the batch calls (issue
18) against the ledger node's own handlers, ROS 2's messages both ways."""
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from filesync.ledger.store import Ledger
from filesync.ros_common.ledger_services import LedgerServices
from filesync.ros2.ledger_client import RosLedger
from filesync.ros2.ledger_node import SERVICES as LEDGER_NODE_SERVICES
from filesync.ros2.messages import ROS2, srv
from support.ros2_stack import test_node  # noqa: F401 - a fixture

REPLY_SECONDS = 2.5
SMALL = 1000  # bytes: a file under it goes in a batch


@contextmanager
def serving(services):
    """A node of its own context serving `services` ({name: (type, callback(request, reply))}) under /filesync/ledger
    on one executor thread, as the ledger node does."""
    context = rclpy.Context()
    rclpy.init(context=context)
    server = rclpy.create_node("ledger_under_test", namespace="/filesync", context=context)
    for name, (kind, callback) in services.items():
        server.create_service(kind, f"/filesync/ledger/{name}", callback)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(server)

    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        rclpy.try_shutdown(context=context)
        thread.join(10)
        executor.shutdown(timeout_sec=5)
        server.destroy_node()


def client_of(test_node, **options):  # noqa: F811
    return RosLedger(SimpleNamespace(client=test_node.create_client, finished=threading.Event()), **options)


def test_a_reply_slower_than_the_resend_interval_still_arrives(test_node):  # noqa: F811
    requests = []

    def query(request, reply):
        requests.append(time.monotonic())
        time.sleep(REPLY_SECONDS)  # the one executor thread is busy: the next request waits, as in the ledger node
        return reply

    with serving({"query": (srv.Query, query)}):
        ledger = client_of(test_node, wait=30, resend_after=1.0)
        started = time.monotonic()
        assert ledger.files() == []
        took = time.monotonic() - started
        assert took < 2 * REPLY_SECONDS + 1, took  # the first reply, or the second at worst
        assert len(requests) <= 3, len(requests)  # resent with a growing interval, not every second


def test_small_files_go_in_batches_over_ros2_and_a_resend_answers_the_same(test_node, tmp_path):  # noqa: F811
    ledger = Ledger(str(tmp_path / "ledger.db"))
    handlers = LedgerServices(ROS2, ledger, str(tmp_path))
    services = {name: (getattr(srv, kind), lambda request, _reply, handler=getattr(handlers, name): handler(request))
                for name, kind in LEDGER_NODE_SERVICES.items()}
    try:
        with serving(services):
            client = client_of(test_node, wait=30)
            entries = [(f"{i}.bin", 100, 1.0) for i in range(3)] + [("big.bin", SMALL, 1.0)]
            client.register("inbox", ["out"], False, entries)
            claimed = client.claim_batch("download", "inbox", "w", 30.0, 8, SMALL)
            assert [(r.path, t.state, t.owner) for r, t in claimed] == [(f"{i}.bin", "active", "w") for i in range(3)]
            again = client.claim_batch("download", "inbox", "w", 30.0, 8, SMALL)  # its reply lost: sent again
            assert [r.id for r, _ in again] == [r.id for r, _ in claimed]
            ends = [(r.id, "download", "inbox", "w", "done", "", "", None, "ab" * 32, "") for r, _ in claimed]
            ends.append((99, "download", "inbox", "w", "retry", "no such file", "", 2.5, "", ""))
            finished = client.finish_batch(ends)
            assert [r and (r.sha256, r.task("download").state) for r in finished] == [("ab" * 32, "done")] * 3 + [None]
            assert [r and r.id for r in client.finish_batch(ends)] == [r and r.id for r in finished]
        assert [ledger.get(r.id).task("download").state for r, _ in claimed] == ["done"] * 3
    finally:
        handlers.close()
        ledger.close()
