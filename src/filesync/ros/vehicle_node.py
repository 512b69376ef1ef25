"""The vehicle node: the one process that owns each `mavlink` vehicle's link (its udp, tcp or serial URL), as MAVROS
owns its link, and serves filesync's own FTP services for it under /filesync/vehicle/: state, list, read, crc32,
remove, write, rename (srv/Vehicle*.srv; the request names the vehicle). The finder, downloader (and its remover) and
uploader reach a vehicle only through these services (VehicleServiceLinks in their DeviceContext), so two processes
never bind one UDP port or open one serial device. What each service does is filesync.ros_common.vehicle's.
"""
import threading

import rospy

import filesync.srv
from filesync.errors import ConfigError, DeviceUnavailable
from filesync.ros.services import ServiceFailed, ServiceUnreachable, call_service
from filesync.ros_common import vehicle as shared
from filesync.ros_common.vehicle import NAMESPACE, expire_loop, handlers
from filesync.srv import VehicleCrc, VehicleList, VehicleRead, VehicleRemove, VehicleRename, VehicleState, VehicleWrite

TYPES = {"state": VehicleState, "list": VehicleList, "read": VehicleRead, "crc32": VehicleCrc,
         "remove": VehicleRemove, "write": VehicleWrite, "rename": VehicleRename}


def run():
    """Run the vehicle node: one link per `mavlink` vehicle of the configuration, and the services."""
    from filesync.ros.node import fail, start_node, wait_for_shutdown
    config = start_node("vehicle")
    if not any(raw.get("kind") == "mavlink" for raw in list(config.sources.values()) + list(config.targets.values())):
        rospy.loginfo("no mavlink vehicle in the configuration: nothing to own")
        wait_for_shutdown()  # stay up (roslaunch would only start it again), without loading pymavlink
        return
    from filesync.devices.vehicle.mavlink import LinkHost, vehicle_links
    try:
        host = LinkHost(vehicle_links(config))
    except ConfigError as error:
        fail(f"bad configuration: {error}")
    for vehicle, link in host.links.items():
        rospy.loginfo(f"vehicle {vehicle}: owns the link {link.options['url']}")

    def respond(name, **fields):
        return getattr(filesync.srv, f"{TYPES[name].__name__}Response")(**fields)

    for name, handler in handlers(host, respond).items():
        rospy.Service(f"{NAMESPACE}/{name}", TYPES[name], handler)
    stop = threading.Event()
    threading.Thread(target=expire_loop, args=(host, stop), name="expire", daemon=True).start()
    rospy.on_shutdown(stop.set)
    wait_for_shutdown()
    host.close()


class VehicleServiceLinks(shared.VehicleServiceLinks):
    """What the finder, downloader and uploader put in their DeviceContext as `vehicle_links`: one link per vehicle
    through the vehicle node's ROS 1 services."""

    def __init__(self):
        super().__init__(_new_transport)


def _new_transport():
    """A vehicle's own proxies of the vehicle node's services, as a transport for VehicleServiceLink."""
    proxies = {name: rospy.ServiceProxy(f"{NAMESPACE}/{name}", kind) for name, kind in TYPES.items()}

    def transport(name, **fields):
        try:
            return call_service(proxies[name], **fields)
        except (ServiceUnreachable, ServiceFailed) as error:
            raise DeviceUnavailable(f"the vehicle node ({NAMESPACE}) does not answer: {error}") from None

    return transport
