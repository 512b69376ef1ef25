"""What the tests' S3 engines share (SeaweedFS, moto's server, `rclone serve s3`): one process on free 127.0.0.1
ports, started and waited for until every bucket answers, killed with -9 (as a crash would), a boto3 client to look
at what it holds, and the options of an `s3` target on it. Each engine's module says how to run it (command()) and what
it must be told after start (ready()).
"""
import os
import socket
import subprocess
import time
import warnings

ACCESS_KEY = "AKIAFILESYNCTEST"
SECRET_KEY = "filesync-test-secret-kq83Zr"
BUCKET = "fleet-logs"


def free_ports(count):
    """`count` distinct ports free on 127.0.0.1 now."""
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


class S3Server:
    """An S3 engine in a process of its own. Subclasses give command(), the S3 port (s3_port) and, where the engine
    needs them, ready() (called once it answers) and environment()."""

    engine = "S3 engine"
    tls = expired = False

    def __init__(self, directory, buckets=(BUCKET,), access_key=ACCESS_KEY, secret_key=SECRET_KEY):
        self.directory = directory
        self.buckets = tuple(buckets)
        self.access_key, self.secret_key = access_key, secret_key
        self.process = None
        self.log_path = os.path.join(directory, f"{self.engine.split()[0].lower()}.log")
        os.makedirs(directory, exist_ok=True)

    s3_port = 0

    @property
    def endpoint(self):
        """The S3 endpoint URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.s3_port}"

    def command(self):
        """The engine's command line."""
        raise NotImplementedError

    def environment(self):
        """The engine's environment (default: this process's)."""
        return None

    def ready(self, client):
        """Called once the engine answers, before waiting for the buckets (e.g. to create them)."""

    def start(self, timeout=30):
        """Start (on the same directory and ports as before) and wait until S3 answers with the buckets in place."""
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
                                            env=self.environment(), start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        # an expired certificate is the point of such a server: readiness does not check it
        client = self.client(connect_timeout=1, read_timeout=2, verify=False if self.expired else None)
        prepared = False
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.engine} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning, for the expired certificate
                    if not prepared:
                        client.list_buckets()
                        self.ready(client)
                        prepared = True
                    for bucket in self.buckets:
                        client.head_bucket(Bucket=bucket)
                return self
            except Exception:  # not up yet: refused, 5xx, or the bucket is not made yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.engine} did not serve S3 within {timeout} s; see {self.log_path}")
                time.sleep(0.1)

    def stop(self):
        """kill -9 (as a crash would) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def remove(self):
        """Stop (the data stays in `directory`, which the test owns)."""
        self.stop()

    ca_file = None

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

    target_defaults = {}  # options an `s3` target on this engine needs

    def target_options(self, **overrides):
        """Options for an `s3` target on this server."""
        options = {"kind": "s3", "endpoint_url": self.endpoint, "bucket": self.buckets[0] if self.buckets else BUCKET,
                   "access_key_id": self.access_key, "secret_access_key": self.secret_key,
                   "addressing_style": "path", "vehicle": "rover1", **self.target_defaults}
        if self.tls:
            options["ca_bundle"] = self.ca_file
        options.update(overrides)
        return options
