"""The command-line tool's client side on ROS 2 (filesync.cli): the ledger's services, the status topic and the
configuration (the `config` parameter of the ledger node: the YAML file's path), each with a timeout. One rclpy node
per run, its executor spinning in a thread; close() ends it."""
import threading

import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from filesync.cli import LEDGER, PAGE, STATUS_TOPIC, Unavailable
from filesync.config import load_config_file
from filesync.ros_common.convert import status_from_msg
from filesync.ros2.messages import ROS2, STATUS_QOS, msg, srv, to_sec
from filesync.ros2.node import CallFailed, call

CONFIG_NODE = "/filesync/ledger"  # the node whose `config` parameter the tool reads
DEFAULT_TIMEOUT = 10.0  # DDS discovery of the ledger and the status publisher took over 3 s on a loaded 2-core machine
_session = {}


def _node():
    """This run's node (made on first use)."""
    if "node" not in _session:
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("filesync_cli", context=context, start_parameter_services=False)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:
                pass

        thread = threading.Thread(target=spin, name="executor", daemon=True)
        thread.start()
        _session.update(node=node, context=context, executor=executor, thread=thread)
    return _session["node"]


def check(_timeout):
    """Nothing to check first on ROS 2 (no master): each call says what does not answer."""
    _node()


def _call(service_type, name, timeout, what, **fields):
    client = _node().create_client(service_type, name)
    try:
        return call(client, ROS2.make(service_type.Request, **fields), timeout)
    except CallFailed as error:
        raise Unavailable(f"{what} does not answer ({error}): is filesync-ros2 (or sync.launch.py) running?") \
            from None
    finally:
        _node().destroy_client(client)


class LedgerClient:
    """One-shot calls to the ledger's services, each with a timeout."""

    def __init__(self, timeout):
        self.timeout = timeout
        client = _node().create_client(srv.Query, f"{LEDGER}/query")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise Unavailable(f"the ledger ({LEDGER}/query) does not answer: is filesync-ros2 (or "
                                  "sync.launch.py) running?")
        finally:
            _node().destroy_client(client)

    def _call(self, name, service_type, **fields):
        return _call(service_type, f"{LEDGER}/{name}", self.timeout, f"the ledger ({LEDGER}/{name})", **fields)

    def files(self, state="", source="", limit=0):
        """Files in id order (paged through the query service), at most `limit` (0: all)."""
        found, after = [], 0
        while True:
            page = min(PAGE, limit - len(found)) if limit else PAGE
            reply = self._call("query", srv.Query, state=state, source=source, after_id=after, limit=page)
            found += reply.files
            if len(reply.files) < page or (limit and len(found) >= limit):
                return found
            after = reply.files[-1].id

    def manage(self, action, file_id):
        """(ok, message, file message) of a retry or forget."""
        reply = self._call("manage", srv.Manage, action=action, file_id=file_id)
        return reply.ok, reply.message, reply.file


def watch_status(on_status):
    """Call on_status(status.Status) on each /filesync/status (the last one at once: the topic is transient-local);
    returns the function that stops it."""
    node = _node()
    subscription = node.create_subscription(msg.Status, STATUS_TOPIC,
                                            lambda message: on_status(status_from_msg(message, to_sec)), STATUS_QOS)
    return lambda: node.destroy_subscription(subscription)


def config(timeout):
    """The configuration the nodes run with: the file the ledger node's `config` parameter names."""
    reply = _call(GetParameters, f"{CONFIG_NODE}/get_parameters", timeout, f"the ledger node ({CONFIG_NODE})",
                  names=["config"])
    path = reply.values[0].string_value if reply.values else ""
    if not path:
        raise Unavailable(f"the ledger node ({CONFIG_NODE}) has no config parameter (or give --config FILE)")
    return load_config_file(path)


def close():
    """End this run's node."""
    if "node" in _session:
        rclpy.try_shutdown(context=_session["context"])  # ends the executor's spin; then its thread can be joined
        _session["thread"].join(5)  # (a spin still under way at exit aborts the interpreter)
        _session["executor"].shutdown(timeout_sec=2)
        _session["node"].destroy_node()
        _session.clear()
