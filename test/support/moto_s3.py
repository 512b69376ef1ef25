"""moto's S3 server for tests (`moto_server` from PyPI's moto[server]) on a free 127.0.0.1 port: a second S3 engine
that, unlike SeaweedFS, accepts a wrong x-amz-checksum-sha256 (FACTS.md). It keeps everything in memory: the buckets
are created at every start, and a kill loses what it held. Any key pair is accepted, unless `free_actions` is given:
then moto enforces IAM after that many requests (its INITIAL_NO_AUTH_ACTION_COUNT; start() makes 3 of them), so a test
can make a user with a policy of its own (iam_user()).
"""
import json
import os

from support.s3_server import BUCKET, S3Server, free_ports

# in a venv of its own (`make setup-test`: requirements-moto.txt), apart from the one filesync runs in
MOTO_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".venv-moto", "bin", "moto_server")


class MotoS3(S3Server):
    """Start, kill and restart `moto_server -H 127.0.0.1 -p PORT`; endpoint, credentials and a boto3 client."""

    engine = "moto_server"
    # it ignores checksums: boto3's own (when_supported) would go in aws-chunked trailers it need not understand
    target_defaults = {"request_checksum_calculation": "when_required"}

    def __init__(self, directory, buckets=(BUCKET,), free_actions=None, **credentials):
        super().__init__(directory, buckets, **credentials)
        self.s3_port = free_ports(1)[0]
        self.free_actions = free_actions

    def environment(self):
        """With free_actions: IAM enforced after that many requests."""
        if self.free_actions is None:
            return None
        return dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(self.free_actions))

    def iam_user(self, name, actions):
        """Make an IAM user allowed `actions` (e.g. "s3:PutObject") on the first bucket; its (key id, secret).
        Three requests: with free_actions, count them in."""
        import boto3
        iam = boto3.client("iam", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                           aws_secret_access_key=self.secret_key, region_name="us-east-1")
        bucket = self.buckets[0]
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": [
                f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def command(self):
        """moto's server on 127.0.0.1 only."""
        if not os.access(MOTO_SERVER, os.X_OK):
            raise RuntimeError(f"{MOTO_SERVER} is missing: make setup-test installs it (requirements-moto.txt)")
        return [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.s3_port)]

    def ready(self, client):
        """Create the buckets (nothing survives a restart)."""
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
