"""The ROS 2 ledger client (filesync.ros2.ledger_client.RosLedger) against a ledger that is slow, not gone: a call whose
reply takes longer than the client's resend interval (a register of a large first scan) must still end, with its
first reply. A client that dropped the request it sent before each resend would never see a reply: the server,
answering one request at a time, would always be busy with one the client had given up."""
import threading
import time
from types import SimpleNamespace

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from filesync.ros2.ledger_client import RosLedger
from filesync.ros2.messages import srv
from support.ros2_stack import test_node  # noqa: F401 - a fixture

REPLY_SECONDS = 2.5


def test_a_reply_slower_than_the_resend_interval_still_arrives(test_node):  # noqa: F811
    context = rclpy.Context()
    rclpy.init(context=context)
    server = rclpy.create_node("slow_ledger", namespace="/filesync", context=context)
    requests = []

    def query(request, reply):
        requests.append(time.monotonic())
        time.sleep(REPLY_SECONDS)  # the one executor thread is busy: the next request waits, as in the ledger node
        return reply

    server.create_service(srv.Query, "/filesync/ledger/query", query)
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
        ledger = RosLedger(SimpleNamespace(client=test_node.create_client, finished=threading.Event()), wait=30,
                           resend_after=1.0)
        started = time.monotonic()
        assert ledger.files() == []
        took = time.monotonic() - started
        assert took < 2 * REPLY_SECONDS + 1, took  # the first reply, or the second at worst
        assert len(requests) <= 3, len(requests)  # resent with a growing interval, not every second
    finally:
        rclpy.try_shutdown(context=context)
        thread.join(10)
        executor.shutdown(timeout_sec=5)
        server.destroy_node()
