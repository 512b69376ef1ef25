"""The S3 peer: SeaweedFS (support/seaweedfs.py) as an `s3` target. Its storage is the bucket's keys under "peer/",
reached with boto3 (put/get/remove below), since an S3 store has no directory to look into."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from contract.peer import Peer, peer
from filesync.devices import create_target
from support.seaweedfs import BUCKET, SeaweedS3

PREFIX = "peer/"


@dataclass
class S3Peer(Peer):
    """A Peer whose storage is S3 keys, PREFIX + the device's name."""
    client: Optional[object] = None

    def put(self, name, data):
        self.client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=data)

    def get(self, name):
        try:
            return self.client.get_object(Bucket=BUCKET, Key=PREFIX + name)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def remove(self, name):
        self.client.delete_object(Bucket=BUCKET, Key=PREFIX + name)


@peer("s3-seaweedfs", sources=False)
@contextmanager
def seaweedfs(directory):
    server = SeaweedS3(directory)
    server.start()
    options = server.target_options(key_template=PREFIX + "{path}", connect_timeout=2.0, max_attempts=1)
    try:
        yield S3Peer(storage=PREFIX, stop=server.stop, start=server.start, client=server.client(),
                     new_target=lambda **extra: create_target("peer", {**options, **extra}),
                     # no <name>.part object (a multipart upload is invisible until completed), and a file under
                     # multipart_threshold is sent whole by publish(): held() needs no request for it
                     expect={"digests": ("sha256",), "start_over": False, "holds_partial": False,
                             "part_visible": False, "held_asks_device": False})
    finally:
        server.remove()
