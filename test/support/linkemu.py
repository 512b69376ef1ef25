"""A link emulator in user space (this kernel has no netem): a UDP relay between MAVLink clients and one server.

Clients send to 127.0.0.1:<emulator.port>; the relay forwards each datagram to the server from a socket of its own
per client (so the server sees each client at its own address, as behind a router) and relays the answers back.
Each direction is one shared link with:
- bandwidth (bytes/s): a datagram occupies the link len/bandwidth seconds and queues behind the ones before it, as
  bytes do on a serial line (921600 baud 8N1 = 92160 bytes/s). The queue is unbounded: a MAVLink sender writing to
  a serial port blocks rather than drops.
- latency (s) added to every datagram;
- loss: the probability that a datagram is lost (it still took its time on the link, like a corrupted frame).
Randomness comes from random.Random(seed), so a run can be repeated.

Filters see every datagram: filter(direction, client, data, reply) where direction is "up" (client to server) or
"down", client the client's address, reply(bytes) sends bytes back to that client, and the return value is the
datagram to pass on (None drops it). They run before the link's bandwidth, delay and loss. The filters are layers
from the client (first) to the server (last): a datagram going up passes them first to last, one going down last to
first, and a filter's reply goes down through the filters before it (so the first filter sees every answer the client
gets, whichever layer made it).
"""
import heapq
import random
import selectors
import socket
import threading
import time


class _Direction:
    def __init__(self, bandwidth, latency, loss):
        self.bandwidth, self.latency, self.loss = bandwidth, latency, loss
        self.busy_until = 0.0
        self.sent = self.lost = 0

    def schedule(self, now, size, rng):
        """When a datagram of `size` bytes arrives at the other end, or None if it is lost."""
        start = max(now, self.busy_until)
        if self.bandwidth:
            self.busy_until = start + size / self.bandwidth
        else:
            self.busy_until = start
        self.sent += 1
        if self.loss and rng.random() < self.loss:
            self.lost += 1
            return None
        return self.busy_until + self.latency


class LinkEmulator:
    """Relay 127.0.0.1:port <-> server_address with the given link properties each way. A context manager."""

    def __init__(self, server_address, bandwidth=None, latency=0.0, loss=0.0, up_loss=None, down_loss=None,
                 seed=1, filters=()):
        self.server_address = server_address
        self.up = _Direction(bandwidth, latency, loss if up_loss is None else up_loss)
        self.down = _Direction(bandwidth, latency, loss if down_loss is None else down_loss)
        self.rng = random.Random(seed)
        self.filters = list(filters)
        self._selector = selectors.DefaultSelector()
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.setblocking(False)
        self.port = self._listen.getsockname()[1]
        self._upstream = {}  # client address -> socket toward the server
        self._client_of = {}  # upstream socket -> client address
        self._queue = []  # (due time, order, socket, data, destination)
        self._order = 0
        self._stop = threading.Event()
        self._thread = None
        self._selector.register(self._listen, selectors.EVENT_READ)

    @property
    def url(self):
        """The pymavlink URL for a client of the emulated link."""
        return f"udpout:127.0.0.1:{self.port}"

    def set_loss(self, loss):
        """Change the loss probability of both directions while running."""
        self.up.loss = self.down.loss = loss

    def start(self):
        self._thread = threading.Thread(target=self._run, name="linkemu", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in [self._listen, *self._upstream.values()]:
            sock.close()
        self._selector.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _upstream_for(self, client):
        sock = self._upstream.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self._upstream[client] = sock
            self._client_of[sock] = client
            self._selector.register(sock, selectors.EVENT_READ)
        return sock

    def _pass(self, direction, client, data, sock, destination, now):
        layers = self.filters if direction == "up" else self.filters[::-1]
        for index, rule in enumerate(layers):
            outer = self.filters[:index][::-1] if direction == "up" else []
            data = rule(direction, client, data, lambda answer, outer=outer: self._answer(client, answer, outer))
            if data is None:
                return
        link = self.up if direction == "up" else self.down
        due = link.schedule(now, len(data), self.rng)
        if due is not None:
            self._order += 1
            heapq.heappush(self._queue, (due, self._order, sock, data, destination))

    def _answer(self, client, data, outer):
        """Send a filter's answer to `client` through the filters between that filter and the client."""
        for rule in outer:
            data = rule("down", client, data, lambda answer: self._listen.sendto(answer, client))
            if data is None:
                return
        self._listen.sendto(data, client)

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, destination = heapq.heappop(self._queue)
                try:
                    sock.sendto(data, destination)
                except OSError:
                    pass  # the receiver is gone; a real link would lose it too
            timeout = min(self._queue[0][0] - now, 0.05) if self._queue else 0.05
            for key, _ in self._selector.select(max(timeout, 0)):
                sock = key.fileobj
                while True:
                    try:
                        data, source = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    now = time.monotonic()
                    if sock is self._listen:
                        upstream = self._upstream_for(source)
                        self._pass("up", source, data, upstream, self.server_address, now)
                    else:
                        client = self._client_of[sock]
                        self._pass("down", client, data, self._listen, client, now)


class LinkEmulatorProcess:
    """A LinkEmulator (without filters) in a child process of its own, as a real link is: the relay then never waits
    for the interpreter lock of the process whose client it carries. For benchmarks; same url/port/stop()."""

    def __init__(self, server_address, **properties):
        import json
        import subprocess
        import sys
        self.process = subprocess.Popen([sys.executable, __file__, json.dumps([list(server_address), properties])],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.process.stdout.readline().decode().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"link emulator did not start: {line!r}")
        self.port = int(line)

    @property
    def url(self):
        """The pymavlink URL for a client of the emulated link."""
        return f"udpout:127.0.0.1:{self.port}"

    def start(self):
        return self

    def stop(self):
        """End the child (it also ends when its stdin closes)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except Exception:
                self.process.kill()
                self.process.wait(5)
        self.process.stdout.close()


if __name__ == "__main__":
    import json
    import sys
    address, arguments = json.loads(sys.argv[1])
    with LinkEmulator(tuple(address), **arguments) as emulator:
        print(emulator.port, flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)
