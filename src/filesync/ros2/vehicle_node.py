"""The vehicle node on ROS 2: the one process that owns each `mavlink` vehicle's link, serving filesync's own FTP
services for it under /filesync/vehicle/ (what each does is filesync.ros_common.vehicle's, shared with ROS 1)."""
import threading

from filesync.errors import ConfigError, DeviceUnavailable
from filesync.ros_common import vehicle as shared
from filesync.ros_common.vehicle import NAMESPACE, expire_loop, handlers
from filesync.ros2.messages import ROS2, srv
from filesync.ros2.node import CallFailed, FilesyncNode, call

TYPES = {"state": srv.VehicleState, "list": srv.VehicleList, "read": srv.VehicleRead, "crc32": srv.VehicleCrc,
         "remove": srv.VehicleRemove, "write": srv.VehicleWrite, "rename": srv.VehicleRename}


def main():
    """Run the vehicle node: one link per `mavlink` vehicle of the configuration, and the services."""
    filesync = FilesyncNode("vehicle")
    config, log = filesync.config, filesync.node.get_logger()
    if not any(raw.get("kind") == "mavlink" for raw in list(config.sources.values()) + list(config.targets.values())):
        log.info("no mavlink vehicle in the configuration: nothing to own")
        filesync.wait_for_shutdown()  # stay up (the supervisor would only start it again), without loading pymavlink
        filesync.close()
        return
    from filesync.devices.vehicle.mavlink import LinkHost, vehicle_links
    try:
        host = LinkHost(vehicle_links(config))
    except ConfigError as error:
        filesync.fail(f"bad configuration: {error}")
    for name, link in host.links.items():
        log.info(f"vehicle {name}: owns the link {link.options['url']}")
    for name, handler in handlers(host, lambda service, **fields: ROS2.make(TYPES[service].Response,
                                                                            **fields)).items():
        filesync.node.create_service(TYPES[name], f"{NAMESPACE}/{name}",
                                     lambda request, _reply, handler=handler: handler(request))
    stop = threading.Event()
    threading.Thread(target=expire_loop, args=(host, stop), name="expire", daemon=True).start()
    filesync.wait_for_shutdown()
    stop.set()
    filesync.close()
    host.close()


class VehicleServiceLinks(shared.VehicleServiceLinks):
    """What the finder, downloader and uploader put in their DeviceContext as `vehicle_links`: one link per vehicle
    through the vehicle node's ROS 2 services."""

    def __init__(self, filesync: FilesyncNode):
        clients, lock = {}, threading.Lock()

        def transport(name, **fields):
            with lock:  # made on first use: a node without a mavlink device makes none
                if name not in clients:
                    clients[name] = filesync.client(TYPES[name], f"{NAMESPACE}/{name}")
            try:
                return call(clients[name], ROS2.make(TYPES[name].Request, **fields))
            except CallFailed as error:
                raise DeviceUnavailable(f"the vehicle node ({NAMESPACE}) does not answer: {error}") from None

        super().__init__(lambda: transport)


if __name__ == "__main__":
    main()
