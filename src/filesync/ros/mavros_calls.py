"""MAVROS 1's FTP services and /state for the `mavros` devices (filesync.devices.vehicle.mavros), on rospy: the one place
where those devices touch ROS 1. A refused call (busy, a file not open or already open) fails the ROS call itself."""
import rosgraph
import rospy
from mavros_msgs import srv
from mavros_msgs.msg import State
from std_srvs.srv import Empty

TYPES = {"list": srv.FileList, "open": srv.FileOpen, "read": srv.FileRead, "write": srv.FileWrite,
         "close": srv.FileClose, "checksum": srv.FileChecksum, "remove": srv.FileRemove, "rename": srv.FileRename,
         "mkdir": srv.FileMakeDir, "reset": Empty}
Refused = rospy.ServiceException  # what a call MAVROS refused raises


class MavrosCalls:
    """Service proxies for /<namespace>/ftp/* and a subscriber of /<namespace>/state calling on_state(message).
    Inits a node if this process has none. `context` (filesync.devices.base.DeviceContext) is not needed on ROS 1."""

    def __init__(self, device_name, namespace, on_state, context=None):
        if not rospy.core.is_initialized():
            rospy.init_node(f"filesync_{device_name}", anonymous=True, disable_signals=True)
        self.namespace = namespace
        self.proxies = {name: rospy.ServiceProxy(self.service(name), kind) for name, kind in TYPES.items()}
        self.subscriber = rospy.Subscriber(f"{namespace}/state", State, on_state, queue_size=1)

    def service(self, name) -> str:
        """The full name of FTP service `name`."""
        return f"{self.namespace}/ftp/{name}"

    def call(self, name, *args, wait=0.0):
        """Call service `name` with the request's fields in order; Refused when MAVROS refuses the call. `wait` (how
        long MAVROS waits for the vehicle) is not needed: rospy waits for the answer, which always comes."""
        return self.proxies[name](*args)

    def offered(self, name, timeout) -> bool:
        """Whether service `name` is offered within `timeout` seconds."""
        try:
            self.proxies[name].wait_for_service(timeout)
        except rospy.ROSException:
            return False
        return True

    def provider(self):
        """The URI of the node offering MAVROS's FTP services now (None: not offered)."""
        try:
            return rosgraph.Master(rospy.get_name()).lookupService(self.service("list"))
        except Exception:  # rosgraph.MasterError: not offered; socket errors: no master either
            return None

    @staticmethod
    def warn(text):
        """Log a warning as the node's."""
        rospy.logwarn(text)
