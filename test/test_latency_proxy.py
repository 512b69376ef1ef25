"""The latency proxy (test/support/latency_proxy.py): the round trip it adds, bandwidth kept, bytes intact, counts."""
import hashlib
import os
import socket
import statistics
import threading
import time

import pytest

from support.latency_proxy import LatencyProxy

MiB = 1 << 20


@pytest.fixture
def echo_port():
    """A TCP echo server on 127.0.0.1: sends back what it reads, closes after the client's EOF."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def echo(connection):
        with connection:
            while True:
                data = connection.recv(1 << 16)
                if not data:
                    return
                connection.sendall(data)

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            connection.settimeout(30)
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def ping_times(port, count):
    """Round-trip times of `count` one-byte pings on one connection."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            connection.sendall(b"x")
            assert connection.recv(1) == b"x"
            times.append(time.perf_counter() - started)
    return times


def test_each_round_trip_takes_twice_the_delay_and_is_counted(echo_port):
    with LatencyProxy(echo_port, delay=0.025) as proxy:
        direct = statistics.median(ping_times(echo_port, 5))
        delayed = ping_times(proxy.port, 10)
        stats = proxy.stats()
    added = statistics.median(delayed) - direct
    assert min(delayed) >= 0.050  # never faster than the delay
    assert added < 0.080, f"added {added * 1000:.1f} ms for a 50 ms round trip"
    assert stats == {"connections": 1, "bytes_up": 10, "bytes_down": 10, "round_trips": 10}


def test_chunks_travel_in_a_pipeline_and_arrive_intact(echo_port):
    # 8 MiB each way in chunks of at most 256 KiB: at least 32 chunks. Held one after the other (each waiting its
    # 25 ms behind the previous one) they would take at least 32 x 25 ms = 0.8 s one way; in a pipeline the
    # whole echo takes about one round trip plus the copying (under 0.1 s here).
    payload = os.urandom(8 * MiB)
    with LatencyProxy(echo_port, delay=0.025) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
            started = time.perf_counter()

            def send():
                connection.sendall(payload)
                connection.shutdown(socket.SHUT_WR)  # the half-close must pass through, delayed like data
            sender = threading.Thread(target=send)
            sender.start()
            received = hashlib.sha256()
            size = 0
            while True:
                data = connection.recv(1 << 20)
                if not data:
                    break
                received.update(data)
                size += len(data)
            elapsed = time.perf_counter() - started
            sender.join(10)
        stats = proxy.stats()
    assert size == len(payload) and received.digest() == hashlib.sha256(payload).digest()
    assert 0.050 <= elapsed < 1.0, f"8 MiB echoed in {elapsed:.2f} s"
    assert stats["bytes_up"] == stats["bytes_down"] == len(payload)


def test_a_refused_target_closes_the_client_and_stop_ends_open_connections(echo_port):
    unused = socket.create_server(("127.0.0.1", 0))
    closed_port = unused.getsockname()[1]
    unused.close()
    with LatencyProxy(closed_port, delay=0.01) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as connection:
            assert connection.recv(1) == b""
        assert proxy.stats()["connections"] == 0
    proxy = LatencyProxy(echo_port, delay=0.01).start()
    connection = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        assert ping_times(proxy.port, 1)
        proxy.stop()
        assert not proxy._thread.is_alive()
        assert connection.recv(1) == b""  # the relayed connection was closed by stop()
    finally:
        connection.close()
