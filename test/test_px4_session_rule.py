"""support.mavsdk_autopilot.Px4SessionRule answers as PX4's MavlinkFTP (src/modules/mavlink/mavlink_ftp.cpp) does:
one session for every kind of open, a resend only of the request its last reply answered, the idle timeout. The
filter is driven here frame by frame, as the link emulator drives it, with the server's answers made up where PX4
would give them (no server behind it)."""
import struct
import time

from pymavlink.dialects.v20 import common as mavlink2

from support.mavsdk_autopilot import Px4SessionRule

TERMINATE, RESET, LIST, OPEN_RO, READ, CREATE, WRITE, OPEN_WO = 1, 2, 3, 4, 5, 6, 7, 11
ACK, NAK = 128, 129
MAVROS, RESTARTED_MAVROS, QGC = ("127.0.0.1", 5001), ("127.0.0.1", 5002), ("127.0.0.1", 5003)


def frame(system, seq, opcode, data=b"", req_opcode=0, session=0, target=1):
    """A FILE_TRANSFER_PROTOCOL frame from `system` (a client's request, or with system 1 the server's reply)."""
    payload = struct.pack("<HBBBBBxI", seq, session, opcode, len(data), req_opcode, 0, 0) + data
    message = mavlink2.MAVLink_file_transfer_protocol_message(0, target, 0, payload.ljust(251, b"\0"))
    return bytes(message.pack(mavlink2.MAVLink(None, srcSystem=system, srcComponent=240 if system != 1 else 1)))


def payload_of(data):
    parser = mavlink2.MAVLink(None)
    message = parser.parse_char(data)
    seq, session, opcode, size, req_opcode = struct.unpack_from("<HBBBB", bytes(message.payload))
    return seq, opcode, req_opcode, bytes(message.payload)[12:12 + size]


class Link:
    """Drives the rule: request() returns what the rule answered itself (None: it let the request through)."""

    def __init__(self, rule):
        self.rule = rule

    def request(self, client, seq, opcode, data=b"/fs/microsd/x.bin\0", session=0):
        answers = []
        passed = self.rule("up", client, frame(client[1] - 4800, seq, opcode, data, session=session),
                           answers.append)
        assert (passed is None) == bool(answers), (passed, answers)
        return payload_of(answers[0]) if answers else None

    def answer(self, client, seq, opcode, req_opcode, data=b""):
        """The server's reply to the request numbered `seq`, passing down through the rule."""
        return self.rule("down", client, frame(1, seq + 1, opcode, data, req_opcode, target=client[1] - 4800),
                         lambda _: None)

    def open(self, client, seq, opcode):
        assert self.request(client, seq, opcode) is None
        self.answer(client, seq, ACK, opcode, struct.pack("<I", 0))


def test_every_kind_of_open_is_refused_while_a_session_is_held():
    """PX4's _workOpen() serves OpenFileRO, CreateFile and OpenFileWO and refuses each while the session is taken."""
    rule = Px4SessionRule()
    link = Link(rule)
    link.open(MAVROS, 10, CREATE)  # mavros_node writes a file ...
    for seq, opcode in ((20, CREATE), (22, OPEN_WO), (24, OPEN_RO)):  # ... and another client wants a session
        assert link.request(QGC, seq, opcode) == (seq + 1, NAK, opcode, bytes([5])), opcode  # NoSessionsAvailable
    assert rule.refusals == 3
    # the holder's own second open is refused too: one session, whoever asks
    assert link.request(MAVROS, 12, OPEN_WO) == (13, NAK, OPEN_WO, bytes([5]))
    assert link.request(MAVROS, 14, TERMINATE) is None
    link.answer(MAVROS, 14, ACK, TERMINATE)
    link.open(QGC, 30, OPEN_WO)


def test_a_restarted_client_counting_from_zero_gets_no_session():
    """A mavros_node that was restarted counts its seq_number from 0 again: its open numbered as the dead one's was
    is refused (PX4 compares with its last reply, not with the open that took the session)."""
    rule = Px4SessionRule()
    link = Link(rule)
    link.open(MAVROS, 0, OPEN_WO)  # the dead mavros_node's first request took the session ...
    assert link.request(MAVROS, 1, LIST, b"/\0") is None
    link.answer(MAVROS, 1, ACK, LIST, b"Fa.ulg\t1\0" * 20)  # ... and a longer reply followed (PX4 stores none)
    # MAVROS numbers each request with the last reply's seq_number: 0, then 1 after the NAK numbered 1, ...
    for seq, opcode in enumerate((OPEN_WO, CREATE, OPEN_RO)):
        assert link.request(RESTARTED_MAVROS, seq, opcode) == (seq + 1, NAK, opcode, bytes([5])), opcode
    # ResetSessions frees the session (what filesync's mavros devices send through /mavros/ftp/reset)
    assert link.request(RESTARTED_MAVROS, 3, RESET) is None
    link.answer(RESTARTED_MAVROS, 3, ACK, RESET)
    link.open(RESTARTED_MAVROS, 4, CREATE)


def test_a_repeated_request_gets_the_last_small_reply_again_whoever_sends_it():
    """PX4 resends its last reply to any request numbered one below it, whatever the request asks, and stores only
    replies of at most 4 data bytes; a NAK it made itself counts as its last reply."""
    rule = Px4SessionRule()
    link = Link(rule)
    link.open(MAVROS, 40, OPEN_RO)
    resent = link.request(QGC, 40, LIST, b"/\0")  # another client's listing numbered 40: the open's ACK again
    assert resent[:3] == (41, ACK, OPEN_RO)
    assert link.request(MAVROS, 41, READ, b"") is None
    link.answer(MAVROS, 41, ACK, READ, b"y" * 239)  # a read's reply is not stored: the next 41 is served anew
    assert link.request(MAVROS, 41, READ, b"") is None
    assert link.request(QGC, 50, OPEN_RO) == (51, NAK, OPEN_RO, bytes([5]))
    assert link.request(QGC, 50, OPEN_RO) == (51, NAK, OPEN_RO, bytes([5]))  # the stored NAK, sent again
    assert rule.refusals == 1
    # no wrap: a reply numbered 0 is never resent (PX4 compares uint16 + 1, an int, with it: 65536 != 0)
    assert link.request(QGC, 65535, OPEN_RO) == (0, NAK, OPEN_RO, bytes([5]))
    assert link.request(QGC, 65535, OPEN_RO) == (0, NAK, OPEN_RO, bytes([5]))
    assert rule.refusals == 3


def test_the_session_ends_after_ten_idle_seconds_and_reads_then_fail():
    rule = Px4SessionRule(idle_timeout=0.2)
    link = Link(rule)
    link.open(MAVROS, 60, OPEN_RO)
    time.sleep(0.3)
    assert link.request(MAVROS, 61, READ, b"") == (62, NAK, READ, bytes([4]))  # InvalidSession
    assert link.request(MAVROS, 63, WRITE, b"z") == (64, NAK, WRITE, bytes([2, 9]))  # lseek(-1): FailErrno EBADF
    link.open(QGC, 70, OPEN_RO)
