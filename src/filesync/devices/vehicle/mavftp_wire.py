"""MAVLink FTP's wire format: the payload's header, the opcodes and NAK codes, how paths and names are carried, and the
filesync error each NAK means. The client (mavftp.py) does the sessions, bursts and resends on top of it."""
import errno
import struct
from dataclasses import dataclass
from enum import IntEnum

from filesync.errors import FileError, PermanentError, TransientError, Vanished

MAX_DATA = 239  # data bytes in one FILE_TRANSFER_PROTOCOL payload
MAX_PATH = MAX_DATA - 1  # a path and its terminating NUL fill at most one payload
PAYLOAD_LEN = 251
HEADER = struct.Struct("<HBBBBBxI")  # seq, session, opcode, size, req_opcode, burst_complete, padding, offset
SEQ_MOD = 1 << 16


class Op(IntEnum):
    """FTP opcodes (FACTS.md)."""
    NONE = 0
    TERMINATE_SESSION = 1
    RESET_SESSIONS = 2
    LIST_DIRECTORY = 3
    OPEN_FILE_RO = 4
    READ_FILE = 5
    CREATE_FILE = 6
    WRITE_FILE = 7
    REMOVE_FILE = 8
    CREATE_DIRECTORY = 9
    OPEN_FILE_WO = 11
    RENAME = 13
    CALC_FILE_CRC32 = 14
    BURST_READ_FILE = 15
    ACK = 128
    NAK = 129


class Nak(IntEnum):
    """NAK codes, sent in data[0] of a NAK."""
    NONE = 0
    FAIL = 1
    FAIL_ERRNO = 2
    INVALID_DATA_SIZE = 3
    INVALID_SESSION = 4
    NO_SESSIONS_AVAILABLE = 5
    EOF = 6
    UNKNOWN_COMMAND = 7
    FILE_EXISTS = 8
    FILE_PROTECTED = 9
    FILE_NOT_FOUND = 10


class VehicleFileNotFound(Vanished):
    """The vehicle says the file or directory does not exist."""


class SessionRefused(TransientError):
    """The vehicle's only FTP session is taken (NAK NoSessionsAvailable)."""


class CommandUnsupported(FileError):
    """The server does not know the command (NAK UnknownCommand)."""


class VehicleFileExists(FileError):
    """The vehicle says the name is taken (NAK FileExists)."""


class VehicleFull(TransientError):
    """The vehicle's storage is full (NAK FailErrno ENOSPC): retried later, once space is freed."""


def encode_path(path: str) -> bytes:
    """A vehicle path as the bytes MAVLink FTP carries (names that are not UTF-8 round-trip surrogate-escaped).

    A path over MAX_PATH bytes does not fit one request (the server adds a terminating NUL): PermanentError.
    """
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH or b"\0" in encoded:
        raise PermanentError(f"{path[:60]!r}: a MAVLink FTP path holds at most {MAX_PATH} bytes and no NUL; "
                             f"this one has {len(encoded)}")
    return encoded


def decode_name(raw: bytes) -> str:
    """A name from a listing (bytes that are not UTF-8 kept surrogate-escaped, so that they round-trip)."""
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Entry:
    """One directory entry as ListDirectory reports it."""
    name: str
    is_dir: bool
    size: int


@dataclass
class Reply:
    """A decoded FTP payload."""
    seq: int
    session: int
    opcode: int
    size: int
    req_opcode: int
    burst_complete: int
    offset: int
    data: bytes

    @classmethod
    def decode(cls, payload: bytes) -> "Reply":
        seq, session, opcode, size, req_opcode, burst_complete, offset = HEADER.unpack_from(payload)
        size = min(size, MAX_DATA)
        return cls(seq, session, opcode, size, req_opcode, burst_complete, offset,
                   payload[HEADER.size:HEADER.size + size])

    def nak_code(self) -> int:
        return self.data[0] if self.data else Nak.NONE


def nak_error(reply: Reply, what: str) -> Exception:
    """The filesync error for a NAK `reply` to the request described by `what` (e.g. "open /fs/x.ulg")."""
    code = reply.nak_code()
    err = reply.data[1] if code == Nak.FAIL_ERRNO and len(reply.data) > 1 else 0
    if code == Nak.FILE_NOT_FOUND or (code == Nak.FAIL_ERRNO and err == errno.ENOENT):
        return VehicleFileNotFound(f"{what}: the vehicle has no such file or directory (NAK FileNotFound); "
                                   "it was removed or renamed after it was listed")
    if code == Nak.NO_SESSIONS_AVAILABLE:
        return SessionRefused(f"{what}: the vehicle refused an FTP session (NAK NoSessionsAvailable): its only "
                              "session is held by another client (QGroundControl, MAVROS, or a crashed earlier run); "
                              "it frees when that client closes it or after the vehicle's idle timeout (10-30 s)")
    if code == Nak.INVALID_SESSION:
        return TransientError(f"{what}: the vehicle no longer knows our FTP session (NAK InvalidSession): it was "
                              "closed by its idle timeout or by another client's ResetSessions")
    if code == Nak.UNKNOWN_COMMAND:
        return CommandUnsupported(f"{what}: the vehicle's FTP server does not support this command")
    if code == Nak.FILE_PROTECTED:
        return PermanentError(f"{what}: the vehicle refuses access (NAK FileProtected; PX4 writes only under "
                              "/fs/microsd/)")
    if code == Nak.FILE_EXISTS or (code == Nak.FAIL_ERRNO and err == errno.EEXIST):
        return VehicleFileExists(f"{what}: the vehicle says the name is taken (NAK FileExists)")
    if code == Nak.FAIL_ERRNO and err in (errno.ENOSPC, errno.EDQUOT):
        return VehicleFull(f"{what}: the vehicle's SD card is full (NAK FailErrno ENOSPC); "
                           "retrying once space is freed")
    if code == Nak.FAIL_ERRNO and err == errno.EBADF:
        return TransientError(f"{what}: the vehicle no longer has our file open (FailErrno EBADF: it rebooted "
                              "or closed the session)")
    if code == Nak.FAIL_ERRNO:
        return FileError(f"{what}: the vehicle failed with errno {err} ({errno.errorcode.get(err, '?')})")
    name = Nak(code).name if code in Nak._value2member_map_ else str(code)
    return FileError(f"{what}: the vehicle answered NAK {name}")
