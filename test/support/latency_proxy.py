"""A TCP proxy on 127.0.0.1 that adds a fixed one-way delay to each direction: a far-away peer for tests and benches.

The kernel here has no netem (FACTS.md), so S3, SFTP or HTTP over a 50 ms round trip goes through this instead:
LatencyProxy(target_port, delay=0.025) listens on its own port and relays every connection to the target.
Each chunk read from one side is written to the other `delay` seconds after it was read: chunks travel in a
pipeline (a chunk read at t leaves at t + delay, whatever else is in flight), so the delay adds latency without
cutting bandwidth, up to `window` bytes in flight per direction (then the reader waits, as a TCP window would).
A half-close (EOF) is delayed like data; a reset or error closes both sides at once.

It also counts what went through (stats()): connections, bytes each way and round trips, a round trip being each
time the data turns from client -> server to server -> client on one connection. For a request/response protocol
that is the number of requests that waited for an answer, which is what the delay multiplies.

Run alone: python test/support/latency_proxy.py --target-port 9000 --delay-ms 25 (prints its port).
"""
import argparse
import asyncio
import collections
import socket
import threading

CHUNK = 256 * 1024
EOF = None  # the queue's marker for a half-close


class _Counts:
    """What went through the proxy; updated on the proxy's loop, read from any thread."""

    def __init__(self):
        self.connections = 0
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self.round_trips = 0

    def snapshot(self):
        return {"connections": self.connections, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "round_trips": self.round_trips}


class LatencyProxy:
    """Relay 127.0.0.1:port to target_host:target_port with `delay` seconds each way; start()/stop() or `with`."""

    def __init__(self, target_port, delay, target_host="127.0.0.1", port=0, window=16 * 1024 * 1024):
        if delay < 0:
            raise ValueError(f"delay must not be negative: {delay}")
        self.target = (target_host, target_port)
        self.delay = delay
        self.window = window
        self.port = port
        self._counts = _Counts()
        self._loop = None
        self._thread = None
        self._server = None
        self._connections = set()
        self._ready = threading.Event()
        self._failure = None

    def start(self, timeout=10):
        """Listen (in a thread of its own) and return self once connections are accepted."""
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the latency proxy did not start")
        if self._failure:
            raise self._failure
        return self

    def stop(self, timeout=10):
        """Close the listener and every relayed connection; wait for the thread."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout)

    def stats(self):
        """{connections, bytes_up, bytes_down, round_trips} since start (or reset_stats())."""
        return self._counts.snapshot()

    def reset_stats(self):
        """Count from zero again."""
        self._counts = _Counts()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # On the proxy's loop ------------------------------------------------------------------------------------------

    def _run(self):
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as error:
            self._failure = error
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _shutdown(self):
        self._server.close()
        relays = list(self._connections)
        for task in relays:
            task.cancel()
        asyncio.ensure_future(self._stop_after(relays))

    async def _stop_after(self, relays):
        await asyncio.gather(*relays, return_exceptions=True)
        self._loop.stop()

    async def _relay(self, client_reader, client_writer):
        self._connections.add(asyncio.current_task())
        server_writer, pipes = None, []
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # nothing listens there: the client sees its connection closed, as with a refused one
            for writer in (client_writer, server_writer):
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._counts.connections += 1
            last = ["down"]  # the direction data last went; a turn from up to down is one round trip
            pipes = [asyncio.ensure_future(self._pipe(client_reader, server_writer, "up", last)),
                     asyncio.ensure_future(self._pipe(server_reader, client_writer, "down", last))]
            # both directions end (EOF each way), or one fails (a reset): then the other is ended at once
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.close()
            self._connections.discard(asyncio.current_task())

    async def _pipe(self, reader, writer, direction, last):
        """Read chunks, each due `delay` after it was read; a second task writes them when due, in order."""
        loop = asyncio.get_running_loop()
        queue = collections.deque()
        queued = [0]  # bytes read and not yet written
        arrived = asyncio.Event()
        room = asyncio.Event()
        room.set()
        sender = asyncio.ensure_future(self._send(writer, queue, queued, arrived, room))
        try:
            while True:
                await room.wait()
                data = await reader.read(CHUNK)
                queue.append((loop.time() + self.delay, data or EOF))
                arrived.set()
                if not data:
                    break
                self._count(direction, len(data), last)
                queued[0] += len(data)
                if queued[0] >= self.window:
                    room.clear()
            await sender
        except BaseException:
            sender.cancel()
            raise

    async def _send(self, writer, queue, queued, arrived, room):
        loop = asyncio.get_running_loop()
        while True:
            while not queue:
                arrived.clear()
                await arrived.wait()
            due, data = queue.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is EOF:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            queued[0] -= len(data)
            if queued[0] < self.window:
                room.set()

    def _count(self, direction, size, last):
        counts = self._counts
        if direction == "up":
            counts.bytes_up += size
        else:
            counts.bytes_down += size
            if last[0] == "up":
                counts.round_trips += 1
        last[0] = direction


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (the round trip adds twice)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    proxy = LatencyProxy(args.target_port, args.delay_ms / 1000, args.target_host, args.port).start()
    print(proxy.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        print(proxy.stats(), flush=True)
        proxy.stop()


if __name__ == "__main__":
    main()
