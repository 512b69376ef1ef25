"""A real pyftpdlib FTP server for tests, run as a subprocess so a test can kill it and start it again.

It appends one JSON line per event to --log: every STOR when it opens (STOR_OPEN) and when it ends with its restart
offset and the bytes it received, every rename, every RETR (in the order they happen: the server is one thread, so
the uploads in progress at any moment can be counted from the log). Tests count re-sent bytes and publications from that log, on the server's side.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--user", default="tester")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--bandwidth", type=int, default=0, help="bytes/s per upload, 0 for unlimited")
    args = parser.parse_args()

    log = open(args.log, "a", buffering=1, encoding="utf-8")

    def record(**event):
        log.write(json.dumps(event) + "\n")

    class RecordingHandler(FTPHandler):
        def ftp_STOR(self, file, mode="w"):
            self._stor_offset = self._restart_position
            record(op="STOR_OPEN", path=os.path.relpath(file, args.root), offset=self._stor_offset)
            return super().ftp_STOR(file, mode)

        def _stored(self, file, complete):
            size = os.path.getsize(file) if os.path.exists(file) else 0
            record(op="STOR", path=os.path.relpath(file, args.root), offset=self._stor_offset,
                   received=size - self._stor_offset, complete=complete)

        def on_file_received(self, file):
            self._stored(file, True)

        def on_incomplete_file_received(self, file):
            self._stored(file, False)

        def ftp_RNTO(self, path):
            result = super().ftp_RNTO(path)
            record(op="RNTO", path=os.path.relpath(path, args.root))
            return result

        def on_file_sent(self, file):
            record(op="RETR", path=os.path.relpath(file, args.root))

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm="elradfmwMT")
    handler = RecordingHandler
    handler.authorizer = authorizer
    handler.permit_foreign_addresses = False
    if args.bandwidth:
        from pyftpdlib.handlers import ThrottledDTPHandler
        ThrottledDTPHandler.read_limit = args.bandwidth
        handler.dtp_handler = ThrottledDTPHandler
    server = FTPServer(("127.0.0.1", args.port), handler)
    record(op="START")  # a killed server logged nothing of the uploads it held: none is open any more
    print(server.address[1], flush=True)
    server.serve_forever(timeout=0.5)


class FtpServerProcess:
    """Start, stop and restart the server above on one port; read its event log."""

    def __init__(self, root, log_path, user="tester", password="secret", bandwidth=0):
        self.root, self.log_path = root, log_path
        self.user, self.password, self.bandwidth = user, password, bandwidth
        self.port = 0
        self.process = None
        os.makedirs(root, exist_ok=True)

    def start(self, timeout=20):
        """Start (on the same port as before, once it had one) and wait until it accepts connections."""
        command = [sys.executable, os.path.abspath(__file__), "--root", self.root, "--port", str(self.port),
                   "--log", self.log_path, "--user", self.user, "--password", self.password,
                   "--bandwidth", str(self.bandwidth)]
        deadline = time.monotonic() + timeout
        while True:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            line = self.process.stdout.readline()
            if line.strip():
                self.port = int(line)
                break
            self.process.wait()
            if time.monotonic() > deadline:  # the old port may linger in TIME_WAIT for a moment
                raise RuntimeError("the test FTP server did not start")
            time.sleep(0.3)
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the test FTP server does not accept connections")

    def stop(self, kill=True):
        """Kill the server (as a crash would) and wait for it."""
        if self.process and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(10)
        self.process = None

    def events(self, op=None):
        """The logged events, optionally of one operation."""
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path, encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle if line.strip()]
        return [e for e in events if op is None or e["op"] == op]

    def most_stores_at_once(self, under=""):
        """The most uploads (STORs opened and not yet ended) the server held at one moment, of paths under `under`
        (relative to its root, e.g. "keep/") when given."""
        now = most = 0
        for event in self.events():
            if event["op"] == "START":
                now = 0
            elif event["op"] in ("STOR_OPEN", "STOR") and event["path"].startswith(under):
                now += 1 if event["op"] == "STOR_OPEN" else -1
            most = max(most, now)
        return most

    def target_options(self, root="/"):
        """Options for an `ftp` target or source using this server."""
        return {"kind": "ftp", "host": "127.0.0.1", "port": self.port, "user": self.user,
                "password": self.password, "root": root}


if __name__ == "__main__":
    main()
