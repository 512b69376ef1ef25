"""What every filesync node on ROS 2 does at start: read the `config` parameter (the YAML file's path, the file ROS 1
loads with rosparam: ROS 2 parameters cannot hold its lists of mappings), route library logs to the node's logger,
spin the executor in a thread of its own, and run loops until shutdown."""
import logging
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from filesync.config import load_config_file
from filesync.errors import ConfigError, TransientError
from filesync.lock import Grant
from filesync.logs import setup_file_logging
from filesync.ros2.messages import srv

NAMESPACE = "/filesync"
CONFIG_PARAMETER = "config"
EVENTS_TOPIC = "/filesync/events"
WAKE_TOPIC = "/filesync/wake"  # the events that make work for the worker nodes (ros_common.workers)
LOCK_NAMESPACE = "/filesync/lock"
CALL_TIMEOUT = 10.0  # seconds one service call waits for its reply before it is sent again (or given up)


class LoggerHandler(logging.Handler):
    """Send the library's Python logging to the node's logger (stderr and /rosout)."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def emit(self, record):
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self.logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.logger.warning(text)
        elif record.levelno >= logging.INFO:
            self.logger.info(text)
        else:
            self.logger.debug(text)


class FilesyncNode:
    """An rclpy node under /filesync (remappable with --ros-args) with its checked Config; its executor spins in a
    thread, so service clients can be called from any other thread."""

    def __init__(self, name, args=None):
        rclpy.init(args=sys.argv if args is None else args)
        self.node = Node(name, namespace=NAMESPACE)
        self.name = self.node.get_fully_qualified_name()
        self.finished = threading.Event()
        self.node.context.on_shutdown(self.finished.set)
        handler = LoggerHandler(self.node.get_logger())
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        library_log = logging.getLogger("filesync")
        library_log.addHandler(handler)
        library_log.setLevel(logging.INFO)
        library_log.propagate = False
        path = self.node.declare_parameter(CONFIG_PARAMETER, "").value
        if not path:
            self.fail(f"no configuration: the parameter {CONFIG_PARAMETER} is not set (the YAML file's path)")
        try:
            self.config = load_config_file(path)
        except ConfigError as error:
            self.fail(f"bad configuration: {error}")
        setup_file_logging(self.config.log_dir, self.name, self.config.log_max_bytes, self.config.log_backup_count)
        self.executor = SingleThreadedExecutor(context=self.node.context)
        self.executor.add_node(self.node)
        self._spinning = threading.Thread(target=self._spin, name="executor", daemon=True)
        self._spinning.start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def fail(self, message):
        """Exit the node with one line on stderr (and in its log)."""
        self.node.get_logger().fatal(message)
        sys.stderr.write(f"{self.name}: {message}\n")
        rclpy.try_shutdown()
        sys.exit(2)

    def client(self, service_type, name):
        """A client of `name`."""
        return self.node.create_client(service_type, name)

    def wait_for_shutdown(self):
        """Block until SIGINT/SIGTERM (rclpy shuts the context down) or a shutdown from inside."""
        try:
            self.finished.wait()
        except KeyboardInterrupt:
            pass

    def shutdown(self, reason=""):
        """Shut the node down (wait_for_shutdown returns)."""
        if reason:
            self.node.get_logger().info(f"shutting down: {reason}")
        rclpy.try_shutdown(context=self.node.context)

    def run_loops(self, loops):
        """Start the loops, wait until shutdown, then stop them and wait."""
        for loop in loops:
            loop.start()
        self.wait_for_shutdown()
        for loop in loops:
            loop.stop()
        for loop in loops:
            loop.join(10)
        self.close()

    def close(self):
        """Stop the executor and destroy the node."""
        rclpy.try_shutdown(context=self.node.context)  # ends the executor's spin; then its thread can be joined
        self._spinning.join(5)  # (a spin still under way at exit aborts the interpreter: "terminate called")
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


class CallFailed(Exception):
    """A service did not answer in time (it is not there, or it restarted while the call was under way)."""


def call(client, request, timeout=CALL_TIMEOUT):
    """client.call(request) that gives up after `timeout` seconds: a reply lost with a restarting server never
    comes, so the caller sends again (every filesync service call is idempotent)."""
    if not client.service_is_ready() and not client.wait_for_service(timeout_sec=timeout):
        raise CallFailed(f"{client.srv_name} is not there")
    reply = client.call(request, timeout_sec=timeout)
    if reply is None:
        raise CallFailed(f"{client.srv_name} did not answer within {timeout:g} s")
    return reply


class RosLeaseClient:
    """The lock node's services with the acquire/release methods of filesync.lock.LeaseTable."""

    def __init__(self, node: FilesyncNode, namespace=LOCK_NAMESPACE):
        self._acquire = node.client(srv.Acquire, f"{namespace}/acquire")
        self._release = node.client(srv.Release, f"{namespace}/release")

    def acquire(self, resource, owner, ttl):
        """See LeaseTable.acquire; raises TransientError while the lock node is away."""
        try:
            reply = call(self._acquire, srv.Acquire.Request(resource=resource, owner=owner, ttl=float(ttl)))
        except CallFailed as error:
            raise TransientError(f"lock service {LOCK_NAMESPACE} does not answer: {error}") from None
        return Grant(reply.granted, reply.token, reply.holder, reply.expires_in)

    def release(self, resource, owner, token):
        """See LeaseTable.release."""
        try:
            return call(self._release, srv.Release.Request(resource=resource, owner=owner, token=token)).released
        except CallFailed:
            return False
