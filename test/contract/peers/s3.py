"""The S3 peers: SeaweedFS (support/seaweedfs.py), the main one, which checks the checksums it is sent, and two that do
not: moto's server (support/moto_s3.py) and `rclone serve s3` (support/rclone_s3.py), each as an `s3` target. A peer's
storage is the bucket's keys under a prefix of its own, reached with boto3 (put/get/remove below), since an S3 store
has no directory to look into. Each also offers a damaging link (support/damaging_proxy.py) for the test that a
damaged copy never passes for the file.

SeaweedFS starts for each test in the test's directory, as every other peer does. moto and rclone start once per test
process (the first test that needs one starts it, the process's exit stops it) and each test gets a fresh prefix:
a stop() and start() of one test kills and restarts the shared engine (moto then holds nothing of earlier tests).
"""
import atexit
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from contract.peer import Peer, peer
from filesync.devices import create_target
from support.damaging_proxy import DamagingProxy
from support.moto_s3 import MotoS3
from support.rclone_s3 import RcloneS3
from support.s3_server import BUCKET
from support.seaweedfs import SeaweedS3

# no <name>.part object (a multipart upload is invisible until completed), and a file under multipart_threshold is
# sent whole by publish(): held() needs no request for it
EXPECT = {"digests": ("sha256",), "start_over": False, "holds_partial": False, "part_visible": False,
          "held_asks_device": False}


@dataclass
class S3Peer(Peer):
    """A Peer whose storage is S3 keys, `prefix` + the device's name."""
    client: Optional[object] = None
    prefix: str = "peer/"

    def put(self, name, data):
        self.client.put_object(Bucket=BUCKET, Key=self.prefix + name, Body=data)

    def get(self, name):
        try:
            return self.client.get_object(Bucket=BUCKET, Key=self.prefix + name)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def remove(self, name):
        self.client.delete_object(Bucket=BUCKET, Key=self.prefix + name)


def _s3_peer(server, prefix, client):
    options = server.target_options(key_template=prefix + "{path}", connect_timeout=2.0, max_attempts=1)

    @contextmanager
    def damaging():
        proxy = DamagingProxy(server.s3_port, damaging=False)
        target = create_target("peer", {**options, "endpoint_url": proxy.endpoint})
        try:
            yield target, lambda on: setattr(proxy, "damaging", on)
        finally:
            target.close()
            proxy.stop()
    return S3Peer(storage=prefix, stop=server.stop, start=server.start, client=client, prefix=prefix,
                  new_target=lambda **extra: create_target("peer", {**options, **extra}), expect=dict(EXPECT),
                  damaging=damaging)


@peer("s3-seaweedfs", sources=False)
@contextmanager
def seaweedfs(directory):
    server = SeaweedS3(directory)
    server.start()
    try:
        yield _s3_peer(server, "peer/", server.client())
    finally:
        server.remove()


_SHARED = {}  # engine class -> its one running server in this process


def _shared(engine_class):
    """The process's one server of `engine_class`, started if it is not running (or was stopped by a test)."""
    server = _SHARED.get(engine_class)
    if server is None:
        server = _SHARED[engine_class] = engine_class(tempfile.mkdtemp(prefix=f"{engine_class.__name__.lower()}-"))

        def remove():
            server.remove()
            shutil.rmtree(server.directory, ignore_errors=True)
        atexit.register(remove)
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


@contextmanager
def _on_shared(engine_class):
    server = _shared(engine_class)
    # the store ignores checksums: boto3's own would go in aws-chunked trailers it need not understand, and the
    # checksum rclone answers on a GET is the one it was told, which need not be that of the bytes
    yield _s3_peer(server, f"peer-{uuid.uuid4().hex[:8]}/",
                   server.client(request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required"))


@peer("s3-moto", sources=False)
def moto(directory):
    return _on_shared(MotoS3)


@peer("s3-rclone", sources=False)
def rclone(directory):
    return _on_shared(RcloneS3)

