"""A MAVLink FTP client: list directories, read files with burst reads, write files with pipelined WriteFile, rename,
remove, and ask the vehicle for a file's CRC-32.

Written from the protocol description (mavlink.io services/ftp and the checked facts in FACTS.md), not from
pymavlink's mavftp module, which is GPL and built around MAVProxy's event loop. pymavlink provides only the
connection (udp, tcp or serial) and the MAVLink 2 framing.

How a read works: OpenFileRO gives the size; BurstReadFile makes the server stream 239-byte ACKs until it sets
burst_complete (PX4 and MAVSDK stop about every 35 KB) or reaches the end. Lost packets leave holes. Once a burst has
surely ended, the ReadFile requests for its holes go out right before the next BurstReadFile, so their answers arrive
ahead of the next burst and the link never idles waiting for them (never during a burst: MAVSDK's server shares one
file position between its burst thread and ReadFile); a hole whose answer is lost is asked for again after the next
burst. Only the holes left when the data reaches the end are filled with ReadFile requests that wait and resend. Bytes
are handed to the caller in order as soon as they are contiguous, so memory stays bounded by about one burst.

How a write works: CreateFile (from byte 0) or OpenFileWO (resuming: PX4 keeps the bytes, MAVSDK's server empties the
file, which the client notices and answers with StartOver), then WriteFile requests of 239 bytes with up to
`write_window` in flight, each resent on its own timeout (WriteFile at an offset is idempotent), and TerminateSession.

Every request is resent with the same seq_number when its reply does not come within the retransmission timeout;
a server must answer a repeated seq_number with its previous reply (PX4 does), so a resend never opens a second
session. The timeout adapts to the measured round trip (as TCP's does) between `min_timeout` and `timeout`. After
`retries` timeouts in a row with no reply at all the link counts as down (DeviceUnavailable).
"""
import logging
import random
import struct
import time
from collections import deque
from typing import Dict, Iterator, List, Optional

from pymavlink import mavutil
from pymavlink.dialects.v20 import common as mavlink2

from filesync.devices.vehicle.mavftp_wire import (HEADER, MAX_DATA, PAYLOAD_LEN, SEQ_MOD, CommandUnsupported, Entry,
                                                  Nak, Op, Reply, SessionRefused, VehicleFileExists, decode_name,
                                                  encode_path, nak_error)
from filesync.errors import DeviceUnavailable, FileError, PermanentError, StartOver, TransientError

log = logging.getLogger(__name__)

ARMED_FLAG = mavlink2.MAV_MODE_FLAG_SAFETY_ARMED
FTP_MSG_ID = mavlink2.MAVLINK_MSG_ID_FILE_TRANSFER_PROTOCOL
HEARTBEAT_MSG_ID = mavlink2.MAVLINK_MSG_ID_HEARTBEAT


class _EndOfFile(Exception):
    """NAK EOF: the end of a file or of a directory listing."""


def _pieces(holes, limit: int) -> List[tuple]:
    """The first `limit` pieces of at most MAX_DATA bytes that cover `holes` [(offset, length)]."""
    pieces = []
    for offset, length in holes:
        while length > 0 and len(pieces) < limit:
            part = min(length, MAX_DATA)
            pieces.append((offset, part))
            offset, length = offset + part, length - part
    return pieces


def _seq_distance(later: int, earlier: int) -> int:
    return (later - earlier) % SEQ_MOD


class _Rtt:
    """Round-trip estimate and retransmission timeout, as TCP computes them (RFC 6298), clamped to [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high
        self.srtt = None
        self.rttvar = 0.0

    def sample(self, rtt: float):
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def rto(self) -> float:
        if self.srtt is None:
            return self.high
        return min(self.high, max(self.low, self.srtt + 4 * self.rttvar))


class _Assembly:
    """Received file data between the next offset to hand out and the furthest byte received, with its holes."""

    def __init__(self, start: int, size: int):
        self.position = start  # next byte to hand to the caller
        self.frontier = start  # end of the furthest data received
        self.size = size
        self.pieces: Dict[int, bytes] = {}  # offset -> data, all at or after position

    def add(self, offset: int, data: bytes) -> bool:
        """Keep `data` at `offset`; False when it brings nothing new."""
        end = min(offset + len(data), self.size)
        if end <= self.position or not data:
            return False
        if offset < self.position:  # overlaps what was handed out already: keep only the new tail
            data, offset = data[self.position - offset:], self.position
        data = data[:end - offset]
        old = self.pieces.get(offset)
        if old is not None and len(old) >= len(data):
            return False
        self.pieces[offset] = data
        self.frontier = max(self.frontier, end)
        return True

    def take(self) -> bytes:
        """The contiguous bytes from position on, removed from the assembly."""
        parts = []
        while True:
            piece = self.pieces.pop(self.position, None)
            if piece is None:
                break
            parts.append(piece)
            self.position += len(piece)
            # drop pieces the one just taken covers (a shorter or shifted copy from another request)
            for offset in [o for o in self.pieces if o < self.position]:
                leftover = self.pieces.pop(offset)
                if offset + len(leftover) > self.position:
                    self.pieces.setdefault(self.position, leftover[self.position - offset:])
        return b"".join(parts)

    def holes(self) -> List[tuple]:
        """(offset, length) ranges between position and frontier that no piece covers."""
        result, cursor = [], self.position
        for offset in sorted(self.pieces):
            if offset > cursor:
                result.append((cursor, offset - cursor))
            cursor = max(cursor, offset + len(self.pieces[offset]))
        if cursor < self.frontier:
            result.append((cursor, self.frontier - cursor))
        return result

    @property
    def buffered(self) -> int:
        return self.frontier - self.position


class MavFtpClient:
    """One MAVLink connection to one vehicle's FTP server. Not thread-safe: callers serialise its use.

    `url` is pymavlink's: udpout:HOST:PORT, udpin:HOST:PORT, tcp:HOST:PORT or a serial device path (with `baud`).
    """

    def __init__(self, url: str, baud: int = 921600, source_system: int = 245, source_component: int = 191,
                 target_system: int = 1, target_component: int = 1, timeout: float = 1.0, min_timeout: float = 0.05,
                 retries: int = 10, crc_timeout: float = 60.0, window: int = 16, chunk_bytes: int = 64 * 1024,
                 max_buffer: int = 1 << 20, write_window: int = 16, burst_lead: int = 32):
        self.url, self.baud = url, baud
        self.source_system, self.source_component = source_system, source_component
        self.target_system, self.target_component = target_system, target_component
        self.timeout, self.retries, self.crc_timeout = timeout, retries, crc_timeout
        self.window = window  # ReadFile requests in flight while filling holes
        self.write_window = write_window  # WriteFile requests in flight
        self.burst_lead = burst_lead  # packets of a burst still to come when the next burst is asked for
        self._burst_bytes = None  # the server's burst length, learned from a complete burst
        self._cuts = self._pipelined = 0  # early burst requests that cut a burst short, and all of them
        self.chunk_bytes = chunk_bytes  # hand data to the caller in blocks of about this size
        self.max_buffer = max_buffer  # out-of-order bytes kept before a burst is restarted at the first hole
        self._rtt = _Rtt(min_timeout, timeout)
        self._conn = None
        self._seq = 0
        self._silent = 0  # timeouts in a row without any reply
        self._heard_at = 0.0  # time.monotonic() of the last FTP reply
        self._last_heartbeat_sent = 0.0
        self.heartbeat = None  # the vehicle's last HEARTBEAT message
        self.heartbeat_time = 0.0  # time.monotonic() when it came

    # ----- connection -----

    def connect(self):
        """Open the connection if it is not open. Raises DeviceUnavailable when the port cannot be opened."""
        if self._conn is not None:
            return
        try:
            conn = mavutil.mavlink_connection(self.url, baud=self.baud, source_system=self.source_system,
                                              source_component=self.source_component, autoreconnect=False)
        except Exception as error:  # serial.SerialException, OSError, ValueError for a bad address
            raise DeviceUnavailable(f"cannot open {self.url}: {error}") from None
        # Speak MAVLink 2 from the first frame: FTP frames then drop their unused payload bytes on the wire.
        conn.mav = mavlink2.MAVLink(conn, srcSystem=self.source_system, srcComponent=self.source_component)
        conn.mav.robust_parsing = True
        conn.WIRE_PROTOCOL_VERSION = "2.0"
        conn.first_byte = False
        port = getattr(conn, "port", None)
        if hasattr(port, "setsockopt"):
            import socket
            try:  # a burst arrives faster than a busy caller may read; don't let the kernel drop it
                port.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            except OSError:
                pass
        self._conn = conn
        self._silent = 0
        # Start from a random seq. PX4 answers any request numbered one below its last reply with that reply, whoever
        # sent it: a restarted client repeating its previous run's seq, or one counting close to another client's
        # (clients started within milliseconds of each other got nearly the same seq from the clock), would get the
        # other's reply to every resend of the same seq and never its own.
        self._seq = random.randrange(SEQ_MOD)
        self._send_heartbeat()

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._conn is not None

    def close(self):
        """Close the connection; the next call reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead serial port can fail; it is gone either way
                pass
            self._conn = None

    def _send_heartbeat(self):
        self._last_heartbeat_sent = time.monotonic()
        self._write(lambda mav: mav.heartbeat_send(mavlink2.MAV_TYPE_ONBOARD_CONTROLLER,
                                                   mavlink2.MAV_AUTOPILOT_INVALID, 0, 0, mavlink2.MAV_STATE_ACTIVE))

    def _write(self, send):
        self.connect()
        try:
            send(self._conn.mav)
        except OSError as error:
            self.close()
            raise DeviceUnavailable(f"{self.url}: {error}") from None

    def _send(self, opcode: int, seq: int, session: int = 0, offset: int = 0, data: bytes = b"", size=None):
        header = HEADER.pack(seq, session, opcode, len(data) if size is None else size, 0, 0, offset)
        payload = (header + data).ljust(PAYLOAD_LEN, b"\0")
        self._write(lambda mav: mav.file_transfer_protocol_send(0, self.target_system, self.target_component,
                                                                payload))

    def _next_seq(self, step: int = 1) -> int:
        seq = self._seq
        self._seq = (self._seq + step) % SEQ_MOD
        return seq

    def _poll(self, timeout: float) -> Optional[Reply]:
        """The next FTP payload addressed to us within `timeout` seconds, or None. Records heartbeats on the way."""
        self.connect()
        conn = self._conn
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = conn.recv_msg()
            except OSError as error:
                self.close()
                raise DeviceUnavailable(f"{self.url}: {error}") from None
            now = time.monotonic()
            if now - self._last_heartbeat_sent >= 1.0:
                self._send_heartbeat()
            if msg is None:
                if now >= deadline:
                    return None
                conn.select(deadline - now)
                continue
            if msg.get_srcSystem() != self.target_system:
                continue
            msg_id = msg.get_msgId()
            if msg_id == FTP_MSG_ID:
                if msg.target_system not in (0, self.source_system) or \
                        msg.target_component not in (0, self.source_component):
                    continue
                self._silent = 0
                self._heard_at = now
                return Reply.decode(bytes(msg.payload))
            if msg_id == HEARTBEAT_MSG_ID and msg.get_srcComponent() == self.target_component:
                self.heartbeat, self.heartbeat_time = msg, now

    def _timed_out(self, what: str):
        """Count one timeout without any reply; raise DeviceUnavailable after `retries` in a row."""
        self._silent += 1
        if self._silent > self.retries:
            self._silent = 0
            raise DeviceUnavailable(f"{what}: no answer from the vehicle's FTP server on {self.url} after "
                                    f"{self.retries} resends")

    def _quiet(self, what: str):
        """A pipelined request's answer is overdue: count a timeout only when nothing at all came for a whole
        retransmission timeout (answers to other requests in flight show the vehicle is there)."""
        if time.monotonic() - self._heard_at >= self._rtt.rto:
            self._heard_at = time.monotonic()
            self._timed_out(what)

    # ----- heartbeat -----

    def wait_heartbeat(self, max_age: float, timeout: float):
        """The vehicle's HEARTBEAT, at most `max_age` seconds old, waiting up to `timeout` for one; None if none."""
        deadline = time.monotonic() + timeout
        self.connect()
        while self._poll(0) is not None:  # take in what has queued up (FTP payloads here are stale replies)
            pass
        while True:
            if self.heartbeat is not None and time.monotonic() - self.heartbeat_time <= max_age:
                return self.heartbeat
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._poll(min(remaining, 0.2))  # FTP payloads seen here are stale replies: dropped

    @property
    def armed(self) -> bool:
        """Whether the last HEARTBEAT said the vehicle is armed."""
        return bool(self.heartbeat is not None and self.heartbeat.base_mode & ARMED_FLAG)

    # ----- single requests -----

    def _request(self, opcode: int, what: str, session: int = 0, offset: int = 0, data: bytes = b"",
                 size=None, first_timeout: Optional[float] = None, total_timeout: Optional[float] = None) -> Reply:
        """Send one request and return its ACK, resending it (same seq) on timeouts; raise the NAK's error.

        `first_timeout`/`total_timeout` are for slow commands (CRC of a large file): the wait doubles per resend.
        """
        seq = self._next_seq()
        started = time.monotonic()
        wait = first_timeout or self._rtt.rto
        sends = 0
        while True:
            self._send(opcode, seq, session, offset, data, size)
            sent_at = time.monotonic()
            sends += 1
            deadline = sent_at + wait
            while True:
                reply = self._poll(max(0.0, deadline - time.monotonic()))
                if reply is None:
                    break
                if reply.req_opcode != opcode or reply.seq != (seq + 1) % SEQ_MOD:
                    continue  # a late reply to an earlier request
                if sends == 1:
                    self._rtt.sample(time.monotonic() - sent_at)
                if reply.opcode == Op.NAK:
                    if reply.nak_code() == Nak.EOF:
                        raise _EndOfFile()
                    raise nak_error(reply, what)
                return reply
            if total_timeout is not None:
                if time.monotonic() - started >= total_timeout:
                    raise DeviceUnavailable(f"{what}: no answer within {total_timeout:.0f} s")
                wait = min(wait * 2, max(0.0, total_timeout - (time.monotonic() - started)) + 0.01)
            else:
                self._timed_out(what)
                wait = min(wait * 2, self.timeout)

    def terminate_session(self, session: int):
        """Close `session` on the vehicle. Best effort: a lost answer or a session already gone changes nothing."""
        try:
            self._request(Op.TERMINATE_SESSION, f"close session {session}", session=session)
        except (TransientError, PermanentError, _EndOfFile) as error:
            log.debug("terminate session %d: %s", session, error)

    def reset_sessions(self):
        """Close every session on the vehicle, also other clients' (use only on a link nobody else uses)."""
        self._request(Op.RESET_SESSIONS, "reset sessions")

    def list_directory(self, path: str) -> List[Entry]:
        """The entries of directory `path`, paging with offset = entries read so far."""
        entries: Dict[str, Entry] = {}
        read = 0
        encoded = encode_path(path)
        while True:
            try:
                reply = self._request(Op.LIST_DIRECTORY, f"list {path}", offset=read, data=encoded)
            except _EndOfFile:
                return list(entries.values())
            raw = [item for item in reply.data.split(b"\0") if item]
            if not raw:
                return list(entries.values())
            read += len(raw)
            for item in raw:
                kind, text = item[:1], decode_name(item[1:])
                if kind == b"F":
                    name, _, size = text.rpartition("\t")
                    entries[name] = Entry(name, False, int(size) if size.isdigit() else 0)
                elif kind == b"D" and text not in (".", ".."):
                    entries[text] = Entry(text, True, 0)
                # "S" entries (skip) only advance the offset

    def crc32(self, path: str) -> int:
        """The vehicle's CalcFileCRC32 of `path` (the MAVLink FTP CRC-32, see filesync.devices.base.mavftp_crc32)."""
        reply = self._request(Op.CALC_FILE_CRC32, f"CRC of {path}", data=encode_path(path),
                              first_timeout=max(self._rtt.rto * 4, 1.0), total_timeout=self.crc_timeout)
        return struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]

    def open_read(self, path: str, idle_wait: float = 0.0) -> tuple:
        """OpenFileRO: (session, size).

        When the vehicle refuses a session and `idle_wait` > 0, stay silent that long and try once more: PX4 closes a
        session after 10 s (30 s in newer releases) without any FTP request from anyone, which frees a session left
        open by a crashed earlier run. Any request renews that timer, so a session kept alive by requests from
        elsewhere (the finder listing through the same link, another client) is still taken then: the caller holds
        the vehicle's lease, so the sessions are reset (ResetSessions) and the open tried a last time.
        """
        try:
            reply = self._request(Op.OPEN_FILE_RO, f"open {path}", data=encode_path(path))
        except SessionRefused:
            if idle_wait <= 0:
                raise
            log.warning("%s: no FTP session free; staying silent %.0f s so that an abandoned one times out",
                        self.url, idle_wait)
            time.sleep(idle_wait)
            try:
                reply = self._request(Op.OPEN_FILE_RO, f"open {path}", data=encode_path(path))
            except SessionRefused:
                log.warning("%s: the vehicle's FTP session is still taken after %.0f s; resetting its sessions",
                            self.url, idle_wait)
                self.reset_sessions()
                reply = self._request(Op.OPEN_FILE_RO, f"open {path}", data=encode_path(path))
        return reply.session, struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]

    def remove(self, path: str):
        """RemoveFile `path`; VehicleFileNotFound when there is none (a lost ACK's resend on a server without PX4's
        reply cache also answers so: callers treat it as removed)."""
        self._request(Op.REMOVE_FILE, f"remove {path}", data=encode_path(path))

    def rename(self, old: str, new: str):
        """Rename `old` to `new` (PX4 and MAVSDK replace a file under `new`: callers check first)."""
        data = encode_path(old) + b"\0" + encode_path(new)
        if len(data) > MAX_DATA:
            raise PermanentError(f"rename {old} to {new}: the two paths take {len(data)} bytes, one request "
                                 f"carries {MAX_DATA}")
        self._request(Op.RENAME, f"rename {old} to {new}", data=data)

    def create_directory(self, path: str):
        """CreateDirectory `path` (one level); a directory already there is fine."""
        try:
            self._request(Op.CREATE_DIRECTORY, f"create directory {path}", data=encode_path(path))
        except VehicleFileExists:
            pass

    # ----- writing -----

    def open_write(self, path: str, offset: int, held=None) -> int:
        """Open `path` for writing from `offset`; returns the session.

        At 0, CreateFile (a file there is emptied). Beyond, OpenFileWO, which PX4 opens as it is (O_CREAT|O_WRONLY)
        and MAVSDK's server empties: `held(path)` (the size the vehicle lists now) tells them apart, and a file that
        no longer holds `offset` bytes raises StartOver, so the caller sends it again from 0.
        """
        if offset == 0:
            return self._request(Op.CREATE_FILE, f"create {path}", data=encode_path(path)).session
        session = self._request(Op.OPEN_FILE_WO, f"open {path} for writing", data=encode_path(path)).session
        if held is not None:
            now = held(path)
            if now < offset:
                self.terminate_session(session)
                raise StartOver(f"{path}: the vehicle holds {now} bytes after opening it to resume at {offset} "
                                "(its FTP server empties a file opened for writing, as MAVSDK's does); sending it "
                                "again from byte 0")
        return session

    def write_blocks(self, path: str, session: int, offset: int, blocks, progress=None) -> int:
        """Write the bytes of `blocks` (an iterable of bytes) at `offset` on, with up to write_window WriteFile
        requests of MAX_DATA bytes in flight; returns the offset after the last byte the vehicle confirmed.

        `progress(offset)` hears of every confirmed prefix. A server that reports writing fewer bytes (PX4 answers
        with the count) gets the rest asked again. Each request is resent on its own timeout; `retries` timeouts in a
        row without any answer raise DeviceUnavailable (the vehicle went away or rebooted).
        """
        pending = deque()  # (offset, data) not yet sent
        in_flight = {}  # request seq -> [offset, data, sent_at, sends]
        confirmed = offset  # every byte before it is written
        done_ranges = {}  # offset -> end, written beyond `confirmed`
        source = iter(blocks)
        position = offset
        exhausted = False
        what = f"write {path}"

        def refill():
            nonlocal position, exhausted
            while not exhausted and len(pending) < self.write_window:
                block = next(source, None)
                if block is None:
                    exhausted = True
                    return
                for start in range(0, len(block), MAX_DATA):
                    piece = bytes(block[start:start + MAX_DATA])
                    pending.append((position, piece))
                    position += len(piece)

        refill()
        while pending or in_flight:
            while pending and len(in_flight) < self.write_window:
                at, data = pending.popleft()
                seq = self._next_seq(2)  # odd gaps: a reply's seq (request + 1) never equals another request's
                self._send(Op.WRITE_FILE, seq, session, at, data)
                in_flight[seq] = [at, data, time.monotonic(), 1]
                refill()
            first_deadline = min(item[2] for item in in_flight.values()) + self._rtt.rto
            reply = self._poll(max(0.0, first_deadline - time.monotonic()))
            if reply is None:
                self._quiet(what)
                now = time.monotonic()
                for seq, item in in_flight.items():
                    if now - item[2] >= self._rtt.rto:
                        self._send(Op.WRITE_FILE, seq, session, item[0], item[1])
                        item[2], item[3] = now, item[3] + 1
                continue
            if reply.req_opcode != Op.WRITE_FILE:
                continue
            item = in_flight.pop((reply.seq - 1) % SEQ_MOD, None)
            if item is None:
                continue
            at, data, sent_at, sends = item
            if sends == 1:
                self._rtt.sample(time.monotonic() - sent_at)
            if reply.opcode == Op.NAK:
                raise nak_error(reply, f"{what} at {at}")
            written = len(data)
            if reply.size >= 4:  # PX4 answers with the count written; MAVSDK with nothing
                written = min(written, struct.unpack_from("<I", reply.data)[0])
            if written < len(data):
                pending.appendleft((at + written, data[written:]))
            if written:
                done_ranges[at] = max(done_ranges.get(at, at), at + written)
            while confirmed in done_ranges:
                confirmed = done_ranges.pop(confirmed)
            if progress is not None:
                progress(confirmed)
        return confirmed

    # ----- reading -----

    def read(self, path: str, offset: int = 0, should_stop=None, idle_wait: float = 0.0) -> Iterator[bytes]:
        """Yield the bytes of `path` from `offset` to the size the vehicle gave at open, in order.

        The session is closed however the iteration ends. `should_stop()` is asked between bursts; a text it
        returns stops the read with TransientError(text) (used to stop when the vehicle arms). `idle_wait`: see
        open_read.
        """
        session, size = self.open_read(path, idle_wait)
        try:
            if offset > size:
                raise FileError(f"{path}: asked to resume at byte {offset} but the vehicle's file has {size} bytes")
            yield from self.read_session(path, session, offset, size, should_stop)
        finally:
            self.terminate_session(session)

    def read_session(self, path, session, offset, size, should_stop=None):
        """Yield the bytes of the open `session` of `path` from `offset` to `size`, in order (see read())."""
        assembly = _Assembly(offset, size)
        burst_supported = True
        out = bytearray()
        fills = {}  # ReadFile seq -> (offset, length), sent along with a burst; an answer counts whenever it comes
        clean = True  # the last burst surely ended, so its holes may be asked for (MAVSDK: see the top)
        while assembly.position < size:
            if should_stop is not None:
                reason = should_stop()
                if reason:
                    raise TransientError(f"{path}: {reason}")
            if burst_supported and assembly.frontier < size:
                for seq in [seq for seq, (at, length) in fills.items() if at + length <= assembly.position]:
                    del fills[seq]
                holes = _pieces(assembly.holes(), self.window * 4) if clean else []
                try:
                    clean = yield from self._coalesce(
                        self._burst(path, session, assembly, holes, fills, should_stop), out)
                except CommandUnsupported:
                    log.info("%s: no BurstReadFile on this server: reading with ReadFile", self.url)
                    burst_supported, clean = False, True
            # The rest (once the data reaches the end, or without bursts), and whenever the holes hold back too much:
            # ReadFile requests that wait for their answers and resend.
            if assembly.frontier >= size or not burst_supported or assembly.buffered >= self.max_buffer:
                holes = assembly.holes()
                if not burst_supported and assembly.frontier < size:
                    holes.append((assembly.frontier, size - assembly.frontier))
                if holes:
                    yield from self._coalesce(self._fill(path, session, assembly, holes), out)
            out += assembly.take()
            if len(out) >= self.chunk_bytes or (out and assembly.position >= size):
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    def _coalesce(self, pieces, out):
        """Run the generator `pieces`, yielding its data in blocks of chunk_bytes; return what it returns."""
        while True:
            try:
                piece = next(pieces)
            except StopIteration as done:
                return done.value
            out += piece
            if len(out) >= self.chunk_bytes:
                yield bytes(out)
                out.clear()

    def _burst(self, path, session, assembly, holes=(), fills=None, should_stop=None):
        """BurstReadFile from the frontier, preceded by ReadFile requests for `holes` (pieces of at most MAX_DATA
        bytes, recorded in `fills`); yields contiguous data as it comes.

        Bursts follow each other without a round trip between them: once the server's burst length is known (from a
        burst that ended with burst_complete), the next burst is asked for at the end the current one will reach,
        while its last `burst_lead` packets are still on the way. A server whose burst runs at the link's pace (PX4)
        would be cut short by such a request: after a few cuts the client stops asking early. No ReadFile goes out
        while a burst may run (see the top). `should_stop()` is asked before every further burst.

        Returns True when the last burst surely ended (burst_complete, EOF or the file's end), False when it went
        silent (its last packets were lost, or the server is slow) so that the server may still be sending.
        """
        fills = {} if fills is None else fills
        for at, length in holes:
            fill_seq = self._next_seq(2)
            self._send(Op.READ_FILE, fill_seq, session, at, size=length)
            fills[fill_seq] = (at, length)
        size = assembly.size
        window = min((size - assembly.frontier) // MAX_DATA + 2, SEQ_MOD // 4)  # packets one burst may carry
        limit = assembly.position + self.max_buffer
        what = f"burst read {path} at {assembly.frontier}"

        def ask(start):
            seq = self._next_seq()
            self._send(Op.BURST_READ_FILE, seq, session, start, size=MAX_DATA)
            return {"seq": seq, "start": start, "sent_at": time.monotonic(), "sends": 1, "got": 0, "end": start}

        current = ask(assembly.frontier)
        first_seq, highest = current["seq"], current["seq"]
        earlier = None  # the burst before `current` when `current` was asked for while it ran
        gap, previous = 0.0, 0.0  # smoothed time between packets, and when the last came
        ended = False
        while True:
            # the first packet is awaited like any reply; after it, silence of several packet gaps ends the burst
            wait = self._rtt.rto if not current["got"] else min(self.timeout, self._rtt.rto + 8 * gap)
            reply = self._poll(wait)
            if reply is None:
                if current["got"]:
                    break
                self._timed_out(what)
                self._send(Op.BURST_READ_FILE, current["seq"], session, current["start"], size=MAX_DATA)
                current["sent_at"], current["sends"] = time.monotonic(), current["sends"] + 1
                continue
            if reply.req_opcode == Op.READ_FILE:
                fill = fills.pop((reply.seq - 1) % SEQ_MOD, None)
                if fill is not None:
                    if reply.opcode == Op.NAK:
                        if reply.nak_code() == Nak.EOF:
                            raise FileError(f"{path}: the vehicle's file ended at {fill[0]}, before the "
                                            f"{assembly.size} bytes it had at open")
                        raise nak_error(reply, f"read {path} at {fill[0]}")
                    assembly.add(fill[0], reply.data[:fill[1]])
                    data = assembly.take()
                    if data:
                        yield data
                continue
            distance = _seq_distance(reply.seq, first_seq)
            if reply.req_opcode != Op.BURST_READ_FILE or not 0 < distance <= \
                    _seq_distance(current["seq"], first_seq) + window:
                continue  # not a packet of this read's bursts
            if distance > _seq_distance(highest, first_seq):
                highest = reply.seq
            now = time.monotonic()
            mine = _seq_distance(reply.seq, current["seq"]) <= window and (
                reply.opcode == Op.NAK or reply.offset >= current["start"])
            if not mine:
                if reply.opcode == Op.ACK and earlier is not None:
                    earlier["end"] = max(earlier["end"], reply.offset + len(reply.data))
                if reply.opcode == Op.ACK and reply.offset < limit:
                    assembly.add(reply.offset, reply.data)
                continue  # data of the earlier burst counts; its end says nothing about the current one
            if not current["got"]:
                if current["sends"] == 1 and not holes and earlier is None:
                    self._rtt.sample(now - current["sent_at"])
                if earlier is not None and earlier["end"] < current["start"] - 4 * MAX_DATA:
                    self._cuts += 1  # our early request stopped the earlier burst before its end
            else:
                gap = 0.9 * gap + 0.1 * (now - previous) if gap else now - previous
            previous = now
            current["got"] += 1
            if reply.opcode == Op.NAK:
                if reply.nak_code() != Nak.EOF:
                    raise nak_error(reply, what)
                if current["got"] == 1 and assembly.frontier < current["start"]:
                    pass  # an earlier burst's data may still fill the rest
                elif current["got"] == 1 and assembly.frontier < assembly.size:
                    raise FileError(f"{path}: the vehicle's file ends at {current['start']}, before the "
                                    f"{assembly.size} bytes it had at open")
                ended = True
                break
            if reply.offset < limit:  # beyond: dropped, so memory stays bounded with a server that never pauses
                assembly.add(reply.offset, reply.data)
                data = assembly.take()
                if data:
                    yield data
            reach = reply.offset + len(reply.data)
            current["end"] = max(current["end"], reach)
            if reply.burst_complete or reach >= size:
                if reply.burst_complete and current["sends"] == 1 and self._burst_bytes is None:
                    self._burst_bytes = reach - current["start"]
                ended = True
                break
            learned = self._burst_bytes
            if learned and self._pipelining() and reach - current["start"] >= learned - self.burst_lead * MAX_DATA:
                following = current["start"] + learned
                if following < size and following + learned <= limit and following > reach:
                    reason = should_stop() if should_stop is not None else None
                    if reason:
                        raise TransientError(f"{path}: {reason}")
                    # the next burst's seq leaves room for every packet the current one may still send
                    self._seq = (current["seq"] + learned // MAX_DATA + 64) % SEQ_MOD
                    earlier = current
                    current = ask(following)
                    self._pipelined += 1
        # the next request must not reuse a seq these bursts used
        last = max(_seq_distance(highest, first_seq), _seq_distance(current["seq"], first_seq))
        self._seq = (first_seq + last + 1) % SEQ_MOD
        return ended

    def _pipelining(self) -> bool:
        """Whether to ask for the next burst early: until early requests have cut bursts short more than a few
        times, and more than one in four of them (a server that streams at the link's pace)."""
        return self._cuts < 3 or self._cuts * 4 < self._pipelined

    def _fill(self, path, session, assembly, holes):
        """Fetch `holes` [(offset, length)] with up to `window` ReadFile requests in flight; yield contiguous data."""
        todo = deque()
        for offset, length in holes:
            while length > 0:
                part = min(length, MAX_DATA)
                todo.append((offset, part))
                offset, length = offset + part, length - part
        in_flight = {}  # request seq -> [offset, length, sent_at, sends]
        while todo or in_flight:
            while todo and len(in_flight) < self.window:
                offset, length = todo.popleft()
                seq = self._next_seq(2)  # odd gaps: a reply's seq (request + 1) never equals another request's
                self._send(Op.READ_FILE, seq, session, offset, size=length)
                in_flight[seq] = [offset, length, time.monotonic(), 1]
            first_deadline = min(item[2] for item in in_flight.values()) + self._rtt.rto
            reply = self._poll(max(0.0, first_deadline - time.monotonic()))
            if reply is None:
                self._quiet(f"read {path}")
                now = time.monotonic()
                for seq, item in in_flight.items():
                    if now - item[2] >= self._rtt.rto:
                        self._send(Op.READ_FILE, seq, session, item[0], size=item[1])
                        item[2], item[3] = now, item[3] + 1
                continue
            if reply.req_opcode != Op.READ_FILE:
                continue
            request = (reply.seq - 1) % SEQ_MOD
            item = in_flight.get(request)
            if item is None:
                continue
            del in_flight[request]
            offset, length, sent_at, sends = item
            if sends == 1:
                self._rtt.sample(time.monotonic() - sent_at)
            if reply.opcode == Op.NAK:
                if reply.nak_code() == Nak.EOF:
                    raise FileError(f"{path}: the vehicle's file ended at {offset}, before the {assembly.size} "
                                    "bytes it had at open")
                raise nak_error(reply, f"read {path} at {offset}")
            data = reply.data[:length]
            if not data:
                raise FileError(f"{path}: the vehicle answered a read at {offset} with no data")
            assembly.add(offset, data)
            if len(data) < length:  # a server may answer with fewer bytes: ask for the rest
                todo.appendleft((offset + len(data), length - len(data)))
            ready = assembly.take()
            if ready:
                yield ready
