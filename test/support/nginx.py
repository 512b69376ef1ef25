"""Debian's nginx for tests: one process (`daemon off; master_process off;`) on a free 127.0.0.1 port, with its own
nginx.conf, pid file, logs and temporary folders in the test's directory, serving one folder of files.

Locations, all over the same folder (`root`):
  /            autoindex on, autoindex_format json: a folder's index is [{"name", "type", "mtime", "size"}, ...]
  /slow/       the same at `slow_rate` bytes/s (limit_rate), so a test can stop the server in the middle of a body
  /norange/    the same with max_ranges 0: Range headers are ignored and every answer is a 200 with the whole file
  /private/    the same for requests with "Authorization: Bearer <token>" only; others get 401
  /broken/     every request answers 503
With tls=True the server speaks HTTPS with a certificate for 127.0.0.1 signed by a CA made here (support/tls.py;
`ca_file`). stop() kills the process (SIGKILL: an outage, as a crash), start() runs it again on the same port.
The access log (`requests()`) gives each request's method, URI, Range header, status and body bytes sent.
"""
import os
import signal
import socket
import subprocess
import time

from support.tls import make_certificates

NGINX = "/usr/sbin/nginx"
TOKEN = "nginx-test-token-7Qw"
START_TIMEOUT = 10.0
FOLDER_LOCATION = "autoindex on; autoindex_format json; autoindex_exact_size on;"


def missing():
    """Why nginx cannot run here (a skip or fail reason), or None."""
    if not os.access(NGINX, os.X_OK):
        return "nginx is not installed (Debian package nginx; it is in the Makefile's APT_PACKAGES)"
    return None


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Nginx:
    """An nginx serving `root` (default <directory>/files); see the module text for its locations."""

    def __init__(self, directory, root=None, tls=False, slow_rate=256 * 1024, token=TOKEN):
        self.directory = os.path.abspath(directory)
        self.root = os.path.abspath(root or os.path.join(self.directory, "files"))
        self.tls = tls
        self.slow_rate = slow_rate
        self.token = token
        self.port = _free_port()
        self.process = None
        self.error_log = os.path.join(self.directory, "error.log")
        self.access_log = os.path.join(self.directory, "access.log")
        self.config_path = os.path.join(self.directory, "nginx.conf")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(os.path.join(self.directory, "temp"), exist_ok=True)
        self.certificates = make_certificates(os.path.join(self.directory, "tls")) if tls else None

    @property
    def base_url(self):
        """The server's root URL, ending in '/'."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def url(self, path=""):
        """The URL of `path` (already URL-quoted) under the server's root."""
        return self.base_url + path

    @property
    def ca_file(self):
        """The CA that signed the server's certificate (tls=True only)."""
        return self.certificates["ca.pem"]

    def _config(self):
        temp = os.path.join(self.directory, "temp")
        listen = f"127.0.0.1:{self.port}" + (" ssl" if self.tls else "")
        tls = (f"ssl_certificate {self.certificates['server.pem']}; "
               f"ssl_certificate_key {self.certificates['server.key']};") if self.tls else ""
        root = self.root + "/"
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {self.directory}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 64; }}
http {{
    default_type application/octet-stream;
    log_format filesync '$request_method $request_uri range=$http_range status=$status sent=$body_bytes_sent';
    access_log {self.access_log} filesync;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen {listen};
        {tls}
        root {self.root};
        location / {{ {FOLDER_LOCATION} }}
        location /slow/ {{ alias {root}; {FOLDER_LOCATION} limit_rate {self.slow_rate}; }}
        location /norange/ {{ alias {root}; {FOLDER_LOCATION} max_ranges 0; }}
        location /private/ {{
            alias {root};
            {FOLDER_LOCATION}
            if ($http_authorization != "Bearer {self.token}") {{ return 401; }}
        }}
        location /broken/ {{ return 503; }}
    }}
}}
"""

    def start(self):
        """Write nginx.conf and run nginx; returns once the port accepts connections (or raises with the log)."""
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        with open(self.config_path, "w") as handle:
            handle.write(self._config())
        with open(os.path.join(self.directory, "nginx.out"), "ab") as output:
            self.process = subprocess.Popen([NGINX, "-p", self.directory, "-c", self.config_path, "-e", self.error_log],
                                            stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not listen on {self.port} within {START_TIMEOUT} s: "
                                       f"{self._log_tail()}") from None
                time.sleep(0.02)

    def stop(self):
        """Kill the server (an outage: connections drop, new ones are refused). Nothing is left running."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def _log_tail(self):
        texts = []
        for path in (os.path.join(self.directory, "nginx.out"), self.error_log):
            try:
                with open(path, errors="replace") as handle:
                    texts.append(handle.read()[-1500:])
            except OSError:
                pass
        return " | ".join(text.strip() for text in texts if text.strip()) or "(no log)"

    def requests(self):
        """The access log so far: one dict per request (method, uri, range, status, sent)."""
        try:
            with open(self.access_log, errors="replace") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            method, uri, rest = line.split(" ", 2)
            fields = dict(part.split("=", 1) for part in rest.split(" ") if "=" in part)
            entries.append({"method": method, "uri": uri, "range": fields.get("range", "-"),
                            "status": int(fields.get("status", 0)), "sent": int(fields.get("sent", 0))})
        return entries

    def put(self, relative, data):
        """Write a file into the served folder (`relative` is a '/'-separated name; bytes or str)."""
        path = os.path.join(os.fsencode(self.root), *os.fsencode(relative).split(b"/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
