"""The vehicle node: the one process that owns each `mavlink` vehicle's link (its udp, tcp or serial URL), as MAVROS
owns its link, and serves filesync's own FTP services for it under /filesync/vehicle/: state, list, read, crc32,
remove, write, rename (srv/Vehicle*.srv; the request names the vehicle). The finder, downloader (and its remover) and
uploader reach a vehicle only through these services (VehicleServiceLinks in their DeviceContext), so two processes
never bind one UDP port or open one serial device.

Reads cross the service in pieces of at most READ_BYTES (the downloader writes them into staging itself, so the
engine's staging and crash consistency are the same as in one process, and memory stays flat in the file's size);
writes likewise. Errors cross as their filesync class name and one line, and are raised again on the client's side.
"""
import logging
import threading

import rospy

from filesync import errors
from filesync.errors import ConfigError, DeviceUnavailable, TransientError
from filesync.paths import device_name, safe_name
from filesync.ros.services import ServiceFailed, ServiceUnreachable, call_service
from filesync.srv import (VehicleCrc, VehicleCrcResponse, VehicleList, VehicleListResponse, VehicleRead,
                          VehicleReadResponse, VehicleRemove, VehicleRemoveResponse, VehicleRename,
                          VehicleRenameResponse, VehicleState, VehicleStateResponse, VehicleWrite,
                          VehicleWriteResponse)

NAMESPACE = "/filesync/vehicle"
READ_BYTES = 64 * 1024  # one read answer at most; a write request carries at most WRITE_BYTES
WRITE_BYTES = 64 * 1024
log = logging.getLogger(__name__)


def error_name(error) -> str:
    """The class name a client raises again for `error`: its nearest class in mavlink.ERROR_CLASSES."""
    from filesync.devices.mavlink import ERROR_CLASSES
    for cls in type(error).__mro__:
        if ERROR_CLASSES.get(cls.__name__) is cls:
            return cls.__name__
    return TransientError.__name__


def _answer(response_class, work):
    """Run work() -> dict of response fields; a failure becomes error_class and error (one line)."""
    try:
        return response_class(**work())
    except Exception as error:  # every failure goes back to the caller, which raises it again
        if not isinstance(error, errors.FilesyncError):
            log.exception("vehicle service failed")
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return response_class(error_class=error_name(error), error=text)


def run():
    """Run the vehicle node: one link per `mavlink` vehicle of the configuration, and the services."""
    from filesync.ros.node import fail, start_node, wait_for_shutdown
    config = start_node("vehicle")
    if not any(raw.get("kind") == "mavlink" for raw in list(config.sources.values()) + list(config.targets.values())):
        rospy.loginfo("no mavlink vehicle in the configuration: nothing to own")
        wait_for_shutdown()  # stay up (roslaunch would only start it again), without loading pymavlink
        return
    from filesync.devices.mavlink import LinkHost, vehicle_links
    try:
        host = LinkHost(vehicle_links(config))
    except ConfigError as error:
        fail(f"bad configuration: {error}")
    for vehicle, link in host.links.items():
        rospy.loginfo(f"vehicle {vehicle}: owns the link {link.options['url']}")

    def list_directory(request):
        def work():
            entries = host.list_directory(request.vehicle, device_name(request.path))
            return {"names": [safe_name(entry.name) for entry in entries],
                    "directories": [entry.is_dir for entry in entries], "sizes": [entry.size for entry in entries]}
        return _answer(VehicleListResponse, work)

    def read(request):
        def work():
            data, size, armed = host.read(request.vehicle, device_name(request.path), request.offset,
                                          min(request.max_bytes or READ_BYTES, READ_BYTES), request.finish)
            return {"data": data, "size": size, "armed": armed}
        return _answer(VehicleReadResponse, work)

    def write(request):
        return _answer(VehicleWriteResponse, lambda: {"held": host.write(
            request.vehicle, device_name(request.path), request.offset, bytes(request.data), request.finish)})

    services = [
        ("state", VehicleState, lambda r: _answer(VehicleStateResponse, lambda: {"armed": host.state(r.vehicle)})),
        ("list", VehicleList, list_directory),
        ("read", VehicleRead, read),
        ("crc32", VehicleCrc, lambda r: _answer(VehicleCrcResponse, lambda: {
            "crc32": host.crc32(r.vehicle, device_name(r.path))})),
        ("remove", VehicleRemove, lambda r: _answer(VehicleRemoveResponse, lambda: host.remove(
            r.vehicle, device_name(r.path)) or {})),
        ("write", VehicleWrite, write),
        ("rename", VehicleRename, lambda r: _answer(VehicleRenameResponse, lambda: host.rename(
            r.vehicle, device_name(r.from_path), device_name(r.to_path)) or {})),
    ]
    for name, kind, handler in services:
        rospy.Service(f"{NAMESPACE}/{name}", kind, handler)
    stop = threading.Event()

    def expire():
        while not stop.wait(1.0):
            host.expire()

    threading.Thread(target=expire, name="expire", daemon=True).start()
    rospy.on_shutdown(stop.set)
    wait_for_shutdown()
    host.close()


class VehicleServiceLink:
    """A vehicle's link through the vehicle node's services (filesync.devices.mavlink.VehicleLink's interface)."""

    def __init__(self, vehicle: str, namespace: str = NAMESPACE):
        from filesync.devices import mavlink  # pymavlink only where a mavlink device is configured
        self._errors, self._entry = mavlink.ERROR_CLASSES, mavlink.Entry
        self.vehicle = vehicle
        self.lock = threading.RLock()
        self.armed = False
        self._proxies = {name: rospy.ServiceProxy(f"{namespace}/{name}", kind) for name, kind in (
            ("state", VehicleState), ("list", VehicleList), ("read", VehicleRead), ("crc32", VehicleCrc),
            ("remove", VehicleRemove), ("write", VehicleWrite), ("rename", VehicleRename))}

    def _call(self, name, **fields):
        try:
            response = call_service(self._proxies[name], vehicle=self.vehicle, **fields)
        except (ServiceUnreachable, ServiceFailed) as error:
            raise DeviceUnavailable(f"the vehicle node ({NAMESPACE}) does not answer: {error}") from None
        if response.error_class:
            raise self._errors.get(response.error_class, TransientError)(response.error)
        return response

    def heartbeat(self) -> bool:
        self.armed = self._call("state").armed
        return self.armed

    def list_directory(self, path):
        response = self._call("list", path=safe_name(path))
        return [self._entry(device_name(name), directory, size)
                for name, directory, size in zip(response.names, response.directories, response.sizes)]

    def read(self, path, offset, should_stop=None, idle_wait=0.0):
        try:
            while True:
                response = self._call("read", path=safe_name(path), offset=offset, max_bytes=READ_BYTES)
                self.armed = response.armed
                if response.data:
                    offset += len(response.data)
                    yield bytes(response.data)
                if offset >= response.size:
                    return
                reason = should_stop() if should_stop is not None else None
                if reason:
                    raise TransientError(f"{path}: {reason}")
        finally:
            try:
                self._call("read", path=safe_name(path), offset=offset, finish=True)
            except errors.FilesyncError:
                pass  # the node closes an idle read by itself

    def crc32(self, path):
        return self._call("crc32", path=safe_name(path)).crc32

    def remove(self, path):
        self._call("remove", path=safe_name(path))

    def rename(self, old, new):
        self._call("rename", from_path=safe_name(old), to_path=safe_name(new))

    def write(self, path, offset, blocks, progress):
        pending = None
        for block in blocks:
            for start in range(0, len(block), WRITE_BYTES):
                piece = block[start:start + WRITE_BYTES]
                if pending is not None:
                    offset = self._call("write", path=safe_name(path), offset=offset, data=pending).held
                    progress(offset)
                pending = piece
        offset = self._call("write", path=safe_name(path), offset=offset, data=pending or b"", finish=True).held
        progress(offset)
        return offset

    def close(self):
        """Nothing to close: the vehicle node owns the connection."""


class VehicleServiceLinks:
    """What the finder, downloader and uploader put in their DeviceContext as `vehicle_links`: one
    VehicleServiceLink per vehicle, shared by every device of the process (their lock serialises them)."""

    def __init__(self):
        self._links = {}
        self._lock = threading.Lock()

    def link(self, vehicle: str, options: dict) -> VehicleServiceLink:
        """The link of `vehicle` (`options` are the vehicle node's business: it checked they agree)."""
        with self._lock:
            if vehicle not in self._links:
                self._links[vehicle] = VehicleServiceLink(vehicle)
            return self._links[vehicle]
