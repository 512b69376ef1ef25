"""A plain HTTP server on 127.0.0.1 that takes PUT and POST uploads (raw or multipart) and records what arrived: the
`http` target's peer in tests and benches. Each answer closes its connection; `statuses` queues answers to give."""
import hashlib
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from filesync.devices.base import local_checksum
from support.flight_review_server import parse_multipart

MiB = 1 << 20


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(200, b"")

    def do_PUT(self):
        self._receive()

    def do_POST(self):
        self._receive()

    def _receive(self):
        sink = self.server.sink
        length = int(self.headers["Content-Length"])
        record = {"method": self.command, "path": urlsplit(self.path).path, "headers": dict(self.headers)}
        content_type = self.headers.get("Content-Type", "")
        body = _Limited(self.rfile, length)
        if content_type.startswith("multipart/form-data"):
            boundary = content_type.split("boundary=", 1)[1].encode()
            files = []

            def file_sink():
                files.append(tempfile.NamedTemporaryFile(dir=sink.folder, delete=False))
                return files[-1]
            parts = parse_multipart(body, boundary, file_sink)
            for handle in files:
                handle.close()
            record["fields"] = {p.name: p.sink.getvalue().decode() for p in parts if p.filename is None}
            record["files"] = {p.name: (p.filename, local_checksum(p.sink.name, "sha256")) for p in parts if p.filename is not None}
        else:
            digest = hashlib.sha256()
            for block in iter(lambda: body.read(MiB), b""):
                digest.update(block)
            record["sha256"] = digest.hexdigest()
        sink.requests.append(record)
        status = sink.statuses.pop(0) if sink.statuses else 201
        echo = f"refused, you sent Authorization: {self.headers.get('Authorization')}".encode()
        self._answer(status, echo if status >= 300 else b"stored", sink.location)

    def _answer(self, status, body, location=None):
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # no idle connection outlives stop()
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)


class _Limited:
    def __init__(self, rfile, length):
        self.rfile, self.left = rfile, length

    def read(self, amount):
        block = self.rfile.read(min(amount, self.left)) if self.left else b""
        self.left -= len(block)
        return block


class SinkServer:
    """A plain HTTP server that takes PUT and POST uploads (raw or multipart) and records what arrived."""

    def __init__(self, folder):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.requests, self.statuses, self.location = [], [], None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
        self.httpd.daemon_threads = True
        self.httpd.sink = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
