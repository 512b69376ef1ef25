"""The vehicle node's services (srv/Vehicle*.srv) for both ROS generations: what each service does with the link
host, and the client's side (VehicleServiceLink), over a generation's transport.

Reads cross the service in pieces of at most READ_BYTES (the downloader writes them into staging itself, so the
engine's staging and crash consistency are the same as in one process, and memory stays flat in the file's size);
writes likewise. Errors cross as their filesync class name and one line, and are raised again on the client's side.
"""
import logging
import threading

from filesync import errors
from filesync.errors import TransientError
from filesync.paths import device_name, safe_name

NAMESPACE = "/filesync/vehicle"
READ_BYTES = 64 * 1024  # one read answer at most; a write request carries at most WRITE_BYTES
WRITE_BYTES = 64 * 1024
SERVICES = ("state", "list", "read", "crc32", "remove", "write", "rename")
log = logging.getLogger(__name__)


def error_name(error) -> str:
    """The class name a client raises again for `error`: its nearest class in mavlink.ERROR_CLASSES."""
    from filesync.devices.vehicle.mavlink import ERROR_CLASSES
    for cls in type(error).__mro__:
        if ERROR_CLASSES.get(cls.__name__) is cls:
            return cls.__name__
    return TransientError.__name__


def _answer(make_response, work):
    """Run work() -> dict of response fields; a failure becomes error_class and error (one line)."""
    try:
        return make_response(**work())
    except Exception as error:  # every failure goes back to the caller, which raises it again
        if not isinstance(error, errors.FilesyncError):
            log.exception("vehicle service failed")
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return make_response(error_class=error_name(error), error=text)


def handlers(host, respond):
    """{service name: handler(request) -> response} over `host` (filesync.devices.vehicle.mavlink.LinkHost);
    respond(service name, **fields) builds that service's response."""
    def answer(name, work):
        return _answer(lambda **fields: respond(name, **fields), work)

    def list_directory(request):
        def work():
            entries = host.list_directory(request.vehicle, device_name(request.path))
            return {"names": [safe_name(entry.name) for entry in entries],
                    "directories": [entry.is_dir for entry in entries], "sizes": [entry.size for entry in entries]}
        return answer("list", work)

    def read(request):
        def work():
            data, size, armed = host.read(request.vehicle, device_name(request.path), request.offset,
                                          min(request.max_bytes or READ_BYTES, READ_BYTES), request.finish)
            return {"data": data, "size": size, "armed": armed}
        return answer("read", work)

    def write(request):
        return answer("write", lambda: {"held": host.write(
            request.vehicle, device_name(request.path), request.offset, bytes(request.data), request.finish)})

    return {
        "state": lambda r: answer("state", lambda: {"armed": host.state(r.vehicle)}),
        "list": list_directory,
        "read": read,
        "crc32": lambda r: answer("crc32", lambda: {"crc32": host.crc32(r.vehicle, device_name(r.path))}),
        "remove": lambda r: answer("remove", lambda: host.remove(r.vehicle, device_name(r.path)) or {}),
        "write": write,
        "rename": lambda r: answer("rename", lambda: host.rename(
            r.vehicle, device_name(r.from_path), device_name(r.to_path)) or {}),
    }


def expire_loop(host, stop):
    """Close the host's idle read sessions once a second until `stop` is set (run in a thread)."""
    while not stop.wait(1.0):
        host.expire()


class VehicleServiceLink:
    """A vehicle's link through the vehicle node's services (filesync.devices.vehicle.mavlink.VehicleLink's interface)."""

    def __init__(self, vehicle: str, transport):
        from filesync.devices.vehicle import mavlink  # pymavlink only where a mavlink device is configured
        self._errors, self._entry = mavlink.ERROR_CLASSES, mavlink.Entry
        self.vehicle = vehicle
        self.lock = threading.RLock()
        self.armed = False
        # transport(service name, **request fields) -> response; raises DeviceUnavailable when the node is away
        self._transport = transport

    def _call(self, name, **fields):
        response = self._transport(name, vehicle=self.vehicle, **fields)
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

    def __init__(self, new_transport):
        self._new_transport = new_transport  # () -> a transport (see VehicleServiceLink), one per vehicle
        self._links = {}
        self._lock = threading.Lock()

    def link(self, vehicle: str, options: dict) -> VehicleServiceLink:
        """The link of `vehicle` (`options` are the vehicle node's business: it checked they agree)."""
        with self._lock:
            if vehicle not in self._links:
                self._links[vehicle] = VehicleServiceLink(vehicle, self._new_transport())
            return self._links[vehicle]
