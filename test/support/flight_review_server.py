"""A stand-in for PX4/flight_review's web server (the one behind logs.px4.io), which cannot run here.

The real server is a tornado application with bokeh, a SQLite database and e-mail notifications; this is a
http.server.ThreadingHTTPServer on 127.0.0.1 that reproduces only its upload contract, as its code defines it
(app/tornado_handlers/upload.py, common.py, app/plot_app/helper.py, db_entry.py at 26c87079; see
../shared/FACTS.md), quirks included:

- POST /upload, multipart/form-data, parsed while it streams in (the file part goes straight to disk). The file part is
  `filearg`; the text fields read are description, email, allowForAnalysis, obfuscated, source, type, feedback,
  windSpeed, rating, videoUrl, public, vehicleName, redirect.
- A missing `description` or `email` (or no `filearg`) is an unexpected exception there: 500, "HTTP Error 500".
- A file that does not start with the ULog magic: 400 "Invalid File".
- Unless source is "CI", the file is parsed as helper.load_ulog_file does: pyulog's ULog(path, <the server's 46-topic
  filter>, disable_str_exceptions=True), with the pyulog pinned in requirements.txt (Flight Review asks for
  pyulog>=1.1, so a server built now runs 1.3.0 too). Any exception there is a ULogException: 400 "Failed to parse the
  file. It is most likely corrupt.". pyulog skips corrupt messages (file_corruption) rather than failing, so
  truncated and partly garbled logs pass; the ULog magic followed by random bytes fails (at tens of kB: pyulog seeks
  before the file's start, OSError), though a large such file can pass as corrupt-but-readable, there as here.
- The file is moved into storage before parsing, so a refused one stays there: `orphans` lists those paths.
- After parsing, the handler reads the log and an exception is a 500 (tests: support.ulog's writers make such logs):
  before its database commit, the vehicle UUID (html.escape: a non-string info value fails) and the flight time
  parameters LND_FLIGHT_T_HI/LO (bit shifts: float values fail), and the upload is not stored; after the commit, MAV
  type, ver_hw, ver_sw, ver_sw_branch, and for a public flight report the duration, estimator, version and
  vehicle_status, and the log IS stored although the answer is 500. It does not touch required topics: a log without
  any of the filter's topics is accepted.
- Success: 302 with Location /plot_app?log=<uuid>; with redirect=false, or source=QGroundControl and no redirect
  field, 200 with the body {"url": "/plot_app?log=<uuid>"}.
- Errors are tornado's custom error page: <html><title>Error N</title><body>HTTP Error N: message</body></html>.
- The body limit is 300 MiB unless the URL carries ?expected_size=N, which replaces the limit (tornado's
  set_max_body_size compares it with the Content-Length of the whole request, not with the file's size). Over the limit
  tornado writes "HTTP/1.1 400 Bad Request" before reading the body and closes the connection, which the sender sees
  as a 400 or as a reset connection.
- No deduplication (the same file twice gives two logs), no resume.
- GET /download?log=<uuid> returns the stored bytes; GET /plot_app?log=<uuid> answers 200 for a stored log.

Not reproduced: the database, plots, e-mail, .ulge decryption, the airframe name lookup (it downloads PX4's airframe
list), the parse timeout's 503 (off by default there, log_load_timeout = 0; a failure mode stands in).

Failure modes for tests: fail_next(status, times) answers `status` to the next uploads (after reading their body),
die_after(n) kills the whole server once an upload has sent n body bytes (its connection is reset), stop()/start()
take the server down and up on the same port.
"""
import contextlib
import html
import io
import json
import os
import re
import socket
import struct
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pyulog import ULog
from pyulog.px4 import PX4ULog
from filesync.devices.base import local_checksum
from support.ulog import DATA_BYTES, MIN_ULOG_SIZE, ULOG_MAGIC, write_log

DEFAULT_BODY_LIMIT = 300 * 1024 * 1024
READ_BLOCK = 1 << 20
FIELD_LIMIT = 1 << 20
FORM_FIELDS = ("description", "email", "allowForAnalysis", "obfuscated", "source", "type", "feedback", "windSpeed",
               "rating", "videoUrl", "public", "vehicleName", "redirect")
# The topics the real server loads (plot_app/helper.py load_ulog_file at 26c87079); data of others is skipped.
PARSE_FILTER = [
    "battery_status", "distance_sensor", "esc_status", "estimator_status", "sensor_combined", "cpuload",
    "vehicle_gps_position", "vehicle_local_position", "vehicle_local_position_setpoint", "vehicle_global_position",
    "actuator_controls_0", "actuator_controls_1", "actuator_outputs", "vehicle_angular_velocity", "vehicle_attitude",
    "vehicle_attitude_setpoint", "vehicle_rates_setpoint", "rc_channels", "position_setpoint_triplet",
    "vehicle_attitude_groundtruth", "vehicle_local_position_groundtruth", "vehicle_visual_odometry", "vehicle_status",
    "airspeed", "airspeed_validated", "manual_control_setpoint", "rate_ctrl_status", "vehicle_air_data",
    "vehicle_magnetometer", "system_power", "tecs_status", "sensor_baro", "sensor_accel", "sensor_accel_fifo",
    "sensor_gyro_fifo", "vehicle_angular_acceleration", "ekf2_timestamps", "manual_control_switches", "event",
    "vehicle_imu_status", "actuator_motors", "actuator_servos", "vehicle_thrust_setpoint", "vehicle_torque_setpoint",
    "failsafe_flags", "device_information"]
PARSE_FAILED = "Failed to parse the file. It is most likely corrupt."


@dataclass
class Upload:
    """One log the server accepted."""
    log_id: str
    filename: str
    fields: dict
    path: str
    size: int
    sha256: str
    query: dict = field(default_factory=dict)


class BodyRejected(Exception):
    """The request body is malformed (the handler answers 400)."""


class ServerKilled(Exception):
    """die_after() fired: the handler drops its connection."""


class _Body:
    """The request body as a stream limited to Content-Length, counting bytes for die_after()."""

    def __init__(self, rfile, length, on_bytes):
        self.rfile = rfile
        self.remaining = length
        self.received = 0
        self.on_bytes = on_bytes

    def read(self, amount):
        amount = min(amount, self.remaining)
        if amount <= 0:
            return b""
        block = self.rfile.read1(amount) if hasattr(self.rfile, "read1") else self.rfile.read(amount)
        if not block:
            raise BodyRejected("the body ended before its Content-Length")
        self.remaining -= len(block)
        self.received += len(block)
        self.on_bytes(self.received)
        return block


class _Part:
    def __init__(self, name, filename, sink):
        self.name = name
        self.filename = filename
        self.sink = sink
        self.size = 0
        self.head = b""  # the first bytes, for the magic check


def parse_multipart(body, boundary, make_file_sink):
    """Read a multipart/form-data body from `body` as it arrives; return its parts in order.

    Hand-written because the standard library's cgi module is deprecated and email.parser holds everything in
    memory; a file part is written to make_file_sink() block by block, so a 400 MB upload never sits in memory.
    """
    delimiter = b"\r\n--" + boundary
    buffer = bytearray()

    def fill():
        block = body.read(READ_BLOCK)
        if not block:
            raise BodyRejected("the body ended inside the multipart data")
        buffer.extend(block)

    while len(buffer) < len(delimiter):  # the body starts with --boundary (the delimiter without its CRLF)
        fill()
    if not buffer.startswith(delimiter[2:]):
        raise BodyRejected("the body does not start with the boundary")
    del buffer[:len(delimiter) - 2]
    parts = []
    while True:
        while len(buffer) < 2:
            fill()
        if buffer[:2] == b"--":
            return parts
        if buffer[:2] != b"\r\n":
            raise BodyRejected("garbage after a boundary")
        del buffer[:2]
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > 16384:
                raise BodyRejected("part headers too long")
            fill()
        end = buffer.index(b"\r\n\r\n")
        headers = buffer[:end].decode("utf-8", "replace")
        del buffer[:end + 4]
        disposition = re.search(r"(?im)^content-disposition:(.*)$", headers)
        if not disposition:
            raise BodyRejected("a part without Content-Disposition")
        name = re.search(r'\bname="([^"]*)"', disposition.group(1))
        filename = re.search(r'\bfilename="([^"]*)"', disposition.group(1))
        part = _Part(name.group(1) if name else "", filename.group(1) if filename else None,
                     make_file_sink() if filename else io.BytesIO())
        parts.append(part)
        while True:
            found = buffer.find(delimiter)
            if found >= 0:
                _append(part, buffer[:found])
                del buffer[:found + len(delimiter)]
                break
            keep = len(delimiter) - 1  # the delimiter may straddle two blocks
            if len(buffer) > keep:
                _append(part, buffer[:-keep])
                del buffer[:-keep]
            fill()


def _append(part, data):
    if not data:
        return
    if len(part.head) < len(ULOG_MAGIC):
        part.head += bytes(data[:len(ULOG_MAGIC) - len(part.head)])
    part.size += len(data)
    if part.filename is None and part.size > FIELD_LIMIT:
        raise BodyRejected(f"field {part.name} is too long")
    part.sink.write(data)


def _error_page(status, message=""):
    """Flight Review's error page (TornadoRequestHandlerBase.write_error)."""
    suffix = f": {message}" if message else ""
    return (f"\n<html><title>Error {status}</title>\n<body>HTTP Error {status}{suffix}</body>\n</html>\n").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # a stalled client does not keep a thread forever

    def log_message(self, *args):  # quiet: tests read server.events instead
        pass

    def handle(self):
        try:
            super().handle()
        except (OSError, ValueError):  # the connection was cut by stop() or by the client
            self.close_connection = True

    def setup(self):
        super().setup()
        self.server.owner._connections.add(self.connection)

    def finish(self):
        self.server.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _reply(self, status, body=b"", headers=(), content_type="text/html; charset=UTF-8"):
        self.server.owner._event(self.command, self.path, status)  # before the client can see the answer
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        owner = self.server.owner
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        log_id = query.get("log", [""])[0]
        upload = owner.find(log_id)
        if parts.path == "/":
            self._reply(200, b"<html><body>Flight Review test server</body></html>")
        elif parts.path == "/plot_app" and upload:
            self._reply(200, f"<html><body>log {upload.log_id}</body></html>".encode())
        elif parts.path == "/download" and upload:
            owner._event(self.command, self.path, 200)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", f"attachment; filename={upload.log_id}.ulg")
            self.send_header("Content-Length", str(upload.size))
            self.end_headers()
            if self.command != "HEAD":
                with open(upload.path, "rb") as handle:
                    for block in iter(lambda: handle.read(READ_BLOCK), b""):
                        self.wfile.write(block)
        else:
            self._reply(404, _error_page(404))

    def do_POST(self):
        owner = self.server.owner
        parts = urlsplit(self.path)
        if parts.path != "/upload":
            self._reply(405, _error_page(405))
            return
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, _error_page(411))
            return
        length = int(length)
        limit = int(query["expected_size"]) if "expected_size" in query else owner.body_limit
        if length > limit:
            # tornado's HTTP1Connection: "Content-Length too long" -> a bare 400, then the connection is closed
            # without reading the body.
            owner._event("POST", self.path, 400, "Content-Length too long")
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        die_at = owner._take_die_after()
        body = _Body(self.rfile, length, lambda received: self._check_die(die_at, received))
        incoming = []

        def file_sink():
            handle = tempfile.NamedTemporaryFile(dir=owner.incoming_dir, delete=False)
            incoming.append(handle)
            return handle

        try:
            try:
                form = parse_multipart(body, _boundary(self.headers.get("Content-Type", "")), file_sink)
            except BodyRejected as error:
                self.close_connection = True
                if not owner.running:  # stop() cut the connection mid-body
                    return
                self._reply(400, _error_page(400, str(error)))
                return
            except ServerKilled:
                _discard(incoming)  # first, so that a client that sees the reset finds no partial file
                owner.kill()
                self.close_connection = True
                return
            for handle in incoming:
                handle.close()
            failure = owner._take_failure()
            if failure:
                self._reply(failure, _error_page(failure))
                return
            status, body_bytes, headers = self._accept(form, query)
            content_type = "text/html; charset=UTF-8"
            self._reply(status, body_bytes, headers, content_type)
        finally:
            _discard(incoming)

    @staticmethod
    def _check_die(die_at, received):
        if die_at is not None and received >= die_at:
            raise ServerKilled()

    def _accept(self, form, query):
        """UploadHandler.post: the same checks, in the same order, with the same answers."""
        owner = self.server.owner
        values = {}
        for part in form:
            if part.filename is None and part.name in FORM_FIELDS and part.name not in values:
                values[part.name] = part.sink.getvalue().decode("utf-8", "replace")
        if "description" not in values or "email" not in values:
            return 500, _error_page(500), ()
        files = [part for part in form if part.name == "filearg" and part.filename is not None]
        if not files:
            return 500, _error_page(500), ()
        file_part = files[0]
        if file_part.head != ULOG_MAGIC:
            return 400, _error_page(400, "Invalid File"), ()
        log_id = str(uuid.uuid4())
        stored = os.path.join(owner.storage_dir, f"{log_id}.ulg")
        file_part.sink.close()
        os.rename(file_part.sink.name, stored)  # moved into place before parsing: a refused file stays (orphan)
        upload = Upload(log_id, file_part.filename, values, stored, file_part.size, local_checksum(stored, "sha256"),
                        query)
        source = values.get("source", "webui")
        if source != "CI":
            try:
                ulog = _load_ulog_file(stored)
            except Exception:  # load_ulog_file turns every pyulog failure into ULogException: 400
                owner._orphan(stored)
                return 400, _error_page(400, PARSE_FAILED), ()
            try:
                _read_before_commit(ulog)
            except Exception:  # the database insert is rolled back: 500, the file stays as an orphan
                owner._orphan(stored)
                return 500, _error_page(500), ()
        owner._store(upload)
        if source != "CI":
            try:
                _read_after_commit(ulog, values)
            except Exception:  # the log is stored and listed, yet the uploader is told 500
                return 500, _error_page(500), ()
        url = "/plot_app?log=" + log_id
        should_redirect = source != "QGroundControl"
        if "redirect" in values:
            should_redirect = values["redirect"] == "true"
        if should_redirect:
            return 302, b"", (("Location", url),)
        return 200, json.dumps({"url": url}).encode(), ()


def _load_ulog_file(path):
    """helper.load_ulog_file: pyulog with the server's topic filter and lenient string decoding."""
    with contextlib.redirect_stdout(io.StringIO()):  # pyulog prints its warnings
        return ULog(path, PARSE_FILTER, disable_str_exceptions=True)


def _read_before_commit(ulog):
    """What UploadHandler.post reads from the parsed log before committing its database rows
    (update_vehicle_db_entry): the vehicle UUID and, with it, the flight time parameters."""
    info, parameters = ulog.msg_info_dict, ulog.initial_parameters
    if "sys_uuid" in info:
        html.escape(info["sys_uuid"])  # a non-string value raises
        if "LND_FLIGHT_T_HI" in parameters and "LND_FLIGHT_T_LO" in parameters:  # helper.get_total_flight_time
            high, low = parameters["LND_FLIGHT_T_HI"], parameters["LND_FLIGHT_T_LO"]
            ((high + 2 ** 32 if high < 0 else high) << 32) | (low + 2 ** 32 if low < 0 else low)  # floats raise


def _read_after_commit(ulog, values):
    """What UploadHandler.post reads after its commit, for the notification e-mail and, for a public flight report,
    DBDataGenerated.from_log_file. The airframe name (a download of PX4's airframe list) is not reproduced."""
    info = ulog.msg_info_dict
    px4 = PX4ULog(ulog)
    px4.get_mav_type()
    hardware = html.escape(info["ver_hw"]) if "ver_hw" in info else ""
    if "sys_uuid" in info and hardware != "SITL":
        html.escape(info["sys_uuid"])
    branch = " (branch: " + info["ver_sw_branch"] + ")" if "ver_sw_branch" in info else ""
    if "ver_sw" in info:
        html.escape(info["ver_sw"]) + branch
    public_report = values.get("type") == "flightreport" and values.get("public") == "true"
    if not public_report:
        return
    int(ulog.last_timestamp) - int(ulog.start_timestamp)
    px4.get_estimator()
    html.escape(info.get("ver_hw", ""))
    html.escape(info.get("ver_sw", ""))
    version = ulog.get_version_info()  # a non-integer ver_sw_release raises
    if version is not None:
        "v{}.{}.{} {}".format(*version)
    try:
        changes = ulog.get_dataset("vehicle_status").list_value_changes("nav_state")
        {int(mode) for _, mode in changes}
    except (KeyError, IndexError):
        pass


def _discard(handles):
    for handle in handles:
        handle.close()
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def _boundary(content_type):
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise BodyRejected("not multipart/form-data")
    return match.group(1).encode()


def _reset(connection):
    """Close with a TCP reset, as a process that dies does (SO_LINGER 0); shutdown() wakes a thread blocked reading."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        connection.close()
    except OSError:
        pass



class FlightReviewServer:
    """The stand-in server: start() on 127.0.0.1 (port 0 picks a free port, kept across stop/start)."""

    def __init__(self, storage_dir, body_limit=DEFAULT_BODY_LIMIT, port=0, ssl_context=None):
        self.ssl_context = ssl_context  # an ssl.SSLContext makes it an HTTPS server
        self.storage_dir = str(storage_dir)
        self.incoming_dir = os.path.join(self.storage_dir, "incoming")
        os.makedirs(self.incoming_dir, exist_ok=True)
        self.body_limit = body_limit
        self.port = port
        self.uploads = []
        self.orphans = []  # paths of files the server kept although it refused them (a parse failure)
        self.events = []  # (method, path, status[, note]) of every answered request
        self._lock = threading.Lock()
        self._connections = set()
        self._failures = []
        self._die_after = None
        self._httpd = None
        self._thread = None

    @property
    def url(self):
        """The server's base URL, e.g. http://127.0.0.1:41234."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        """Listen (again) on the port; returns self."""
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.daemon_threads = True
        httpd.owner = self
        if self.ssl_context is not None:
            httpd.socket = self.ssl_context.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"flight-review-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening and cut every open connection: the host is down until start()."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        for connection in list(self._connections):
            _reset(connection)
        self._thread.join(timeout=10)

    kill = stop  # what a crash looks like from outside: the listener is gone and connections are reset

    @property
    def running(self):
        return self._httpd is not None

    def fail_next(self, status, times=1):
        """Answer `status` (e.g. 503) to the next `times` uploads, after reading their bodies."""
        with self._lock:
            self._failures.extend([status] * times)

    def die_after(self, received_bytes):
        """Kill the server once the next upload has sent `received_bytes` of its body."""
        with self._lock:
            self._die_after = received_bytes

    def find(self, log_id):
        """The Upload with this id, or None."""
        with self._lock:
            return next((upload for upload in self.uploads if upload.log_id == log_id), None)

    def _take_failure(self):
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_die_after(self):
        with self._lock:
            value, self._die_after = self._die_after, None
            return value

    def _store(self, upload):
        with self._lock:
            self.uploads.append(upload)

    def _orphan(self, path):
        with self._lock:
            self.orphans.append(path)

    def _event(self, *event):
        with self._lock:
            self.events.append(event)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def write_ulog(path, payload_bytes=1000, seed=0, block=DATA_BYTES):
    """Write a valid ULog file with at least `payload_bytes` of data in data messages of `block` bytes; return its size.

    support.ulog.write_log() writes it (header, flag bits, formats, info, subscription, data, filler); this size-by-payload
    form is what the HTTP target tests and the soak ask for. Memory stays flat: a 400 MB file is written block by block.
    """
    size = MIN_ULOG_SIZE + payload_bytes + block + (payload_bytes // block + 1) * 32
    write_log(path, size, seed, data_bytes=block)
    return size
