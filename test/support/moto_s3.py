"""moto's S3 server for tests (`moto_server` from PyPI's moto[server]) on a free 127.0.0.1 port: a second S3 engine
that, unlike SeaweedFS, accepts a wrong x-amz-checksum-sha256 (FACTS.md). It keeps everything in memory: the buckets
are created at every start, and a kill loses what it held. Any key pair is accepted.
"""
import os
import sys

from support.s3_server import BUCKET, S3Server, free_ports

MOTO_SERVER = os.path.join(os.path.dirname(sys.executable), "moto_server")


class MotoS3(S3Server):
    """Start, kill and restart `moto_server -H 127.0.0.1 -p PORT`; endpoint, credentials and a boto3 client."""

    engine = "moto_server"
    # it ignores checksums: boto3's own (when_supported) would go in aws-chunked trailers it need not understand
    target_defaults = {"request_checksum_calculation": "when_required"}

    def __init__(self, directory, buckets=(BUCKET,), **credentials):
        super().__init__(directory, buckets, **credentials)
        self.s3_port = free_ports(1)[0]

    def command(self):
        """moto's server on 127.0.0.1 only."""
        if not os.access(MOTO_SERVER, os.X_OK):
            raise RuntimeError("moto_server is missing: pip install -r requirements-test.txt (moto[server])")
        return [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.s3_port)]

    def ready(self, client):
        """Create the buckets (nothing survives a restart)."""
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
