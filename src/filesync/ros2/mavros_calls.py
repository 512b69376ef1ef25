"""MAVROS 2's FTP services and /state for the `mavros` devices (filesync.devices.vehicle.mavros), on rclpy: the one place
where those devices touch ROS 2.

MAVROS 2 (mavros/src/plugins/ftp.cpp on the ros2 branch) refuses a call (busy, a file already open) by throwing in
the service callback: mavros_node aborts and the call is never answered. So a call that gets no answer within
MAVROS's own wait plus ANSWER_MARGIN raises Refused, and MAVROS counts as gone from then on (it answers every call
it lives through; filesync's processes call it one at a time, under the vehicle's lease). A dead node's services
stay in the DDS graph until its lease ends (20 s seen here), so MAVROS counts as back, restarted, when a
/<namespace>/state publisher not seen before appears (mavros_node publishes it, each start with a new endpoint id)."""
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from mavros_msgs import srv
from mavros_msgs.msg import State
from std_srvs.srv import Empty

TYPES = {"list": srv.FileList, "open": srv.FileOpen, "read": srv.FileRead, "write": srv.FileWrite,
         "close": srv.FileClose, "checksum": srv.FileChecksum, "remove": srv.FileRemove, "rename": srv.FileRename,
         "mkdir": srv.FileMakeDir, "reset": Empty}
ANSWER_MARGIN = 3.0  # seconds beyond MAVROS's own wait before a call counts as never answered
# MAVROS 2's sys_status publishes state with QoS(10).transient_local(): a late subscriber gets the last one
STATE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Refused(Exception):
    """MAVROS 2 did not answer the call (it aborted on a refusal, died, or is restarting)."""


class _OwnNode:
    """A node of the device's own, spun in a thread, for a process that is not one of filesync's ROS 2 nodes."""

    def __init__(self, name):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self._spin, name=f"{name}-executor", daemon=True).start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass


class MavrosCalls:
    """Clients of /<namespace>/ftp/* and a subscriber of /<namespace>/state calling on_state(message), on the node of
    `context.ros_node` (the filesync node running the device) or, without one, on a node of its own."""

    def __init__(self, device_name, namespace, on_state, context=None):
        host = getattr(context, "ros_node", None) or _OwnNode(f"filesync_{device_name}")
        self.node = host.node
        self.namespace = namespace
        self.clients = {name: self.node.create_client(kind, self.service(name)) for name, kind in TYPES.items()}
        self.subscription = self.node.create_subscription(State, f"{namespace}/state", on_state, STATE_QOS)
        self._seen = set()  # endpoint ids of every /state publisher seen
        self._starts = 0  # how many times a new one appeared: the provider's identity
        self._dead = None  # the provider's identity when a call went unanswered (mavros_node died), else None

    def service(self, name) -> str:
        """The full name of FTP service `name`."""
        return f"{self.namespace}/ftp/{name}"

    def call(self, name, *args, wait=0.0):
        """Call service `name` with the request's fields in order; Refused when no answer comes within `wait` (how
        long MAVROS itself waits for the vehicle) plus ANSWER_MARGIN seconds."""
        client = self.clients[name]
        request = client.srv_type.Request()
        for field, value in zip(request.get_fields_and_field_types(), args):
            setattr(request, field, value)
        if not client.service_is_ready() or self._gone():
            raise Refused(f"{self.service(name)} is not offered")
        response = client.call(request, timeout_sec=wait + ANSWER_MARGIN)
        if response is None:
            self._dead = self._starts
            raise Refused(f"no answer from {self.service(name)} within {wait + ANSWER_MARGIN:g} s")
        return response

    def offered(self, name, timeout) -> bool:
        """Whether service `name` is offered (by a mavros_node that did not die) within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.clients[name].wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())) or \
                self._gone():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def provider(self):
        """An identity of the mavros_node offering the services that changes when another one starts (None: not
        offered, or not known yet)."""
        if not self.clients["list"].service_is_ready() or self._gone():
            return None
        return self._identity()

    def _identity(self):
        publishers = self.node.get_publishers_info_by_topic(f"{self.namespace}/state")
        current = {bytes(info.endpoint_gid) for info in publishers}
        if not current:  # not discovered yet (or the old one gone before the new one is seen)
            return None
        if current - self._seen:
            self._seen |= current
            self._starts += 1
        return self._starts

    def _gone(self) -> bool:
        """True while the mavros_node that left a call unanswered is the last one seen."""
        if self._dead is not None and self._identity() not in (None, self._dead):
            self._dead = None  # another one started
        return self._dead is not None

    def warn(self, text):
        """Log a warning as the node's."""
        self.node.get_logger().warning(text)
