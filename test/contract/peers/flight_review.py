"""The Flight Review peer: the stand-in of PX4/flight_review (support/flight_review_server.py, as strict as the real
server: it parses every upload with pyulog) as a `flight_review` target, an upload API that names what it stores."""
import os
import tempfile
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

from contract.peer import Peer, peer
from filesync.devices import create_target
from support.flight_review_server import FlightReviewServer
from support.ulog import write_log


def ulog_sample(name, size):
    """A valid ULog of `size` bytes, distinct for `name`."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample.ulg")
        write_log(path, size, seed=sum(name.encode()))
        with open(path, "rb") as handle:
            return handle.read()


@peer("flight_review", sources=False)
@contextmanager
def flight_review(directory):
    server = FlightReviewServer(os.path.join(directory, "review")).start()

    def fetch(location):
        log_id = parse_qs(urlsplit(location).query)["log"][0]
        [upload] = [u for u in server.uploads if u.log_id == log_id]
        with open(upload.path, "rb") as handle:
            return handle.read()

    try:
        yield Peer(storage=os.path.join(directory, "review"), stop=server.stop, start=server.start,
                   new_target=lambda **extra: create_target("peer", {"kind": "flight_review", "server": server.url,
                                                                      "connect_timeout": 2, **extra}),
                   make_sample=ulog_sample, fetch_location=fetch)
    finally:
        server.stop()
