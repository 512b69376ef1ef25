"""Log files for tests: valid PX4 ULog files of an exact size, and the damaged kinds Flight Review meets.

The messages are written by hand after the documented format (docs.px4.io, "ULog File Format"): pyulog has a writer,
ULog.write_ulog(), but it serializes a whole parsed ULog held in memory (every data message becomes a Python object
first), so it cannot stream the 50 MB and 400 MB logs some tests need with flat memory. pyulog reads every file
written here (test/test_ulog_support.py checks it).

A log from write_log() holds, in order: the file header (magic, version 1, start time), the flag bits, one format
(`filesync_test_data`: a uint64 timestamp and a byte array), info messages (sys_name, ver_hw, ver_sw, sys_uuid), one
parameter (MAV_TYPE), the subscription of that format, data messages of seeded random bytes with a sync message after
every SYNC_EVERY of them, and a final logged string whose length makes the file exactly `size` bytes. The topic is not
one Flight Review loads, so parsing skips its data, as for most topics of a real log. The smallest such file is
MIN_ULOG_SIZE (346) bytes; write_log() writes plain bytes (write_bytes) below that.
"""
import hashlib
import itertools
import os
import random
import struct

ULOG_MAGIC = b"ULog\x01\x12\x35"  # pyulog's ULog.HEADER_BYTES: "ULog", then 0x01 0x12 0x35
SYNC_MAGIC = b"\x2f\x73\x13\x20\x25\x0c\xbb\x12"  # pyulog's ULog.SYNC_BYTES
TOPIC = "filesync_test_data"
DATA_BYTES = 4000  # payload of a data message, besides its timestamp; small logs use fewer
MIN_DATA_BYTES = 8
SYNC_EVERY = 8  # data messages between two sync messages (PX4's logger writes them so readers can resynchronize)
START_US = 1_000_000
STEP_US = 1000
LOG_LEVEL_INFO = ord("6")
MAX_PAYLOAD = 0xFFFF  # a message's size field is a uint16
_FILLER_HEAD = 3 + 1 + 8  # a logged string message without its text
WRITE_BLOCK = 1 << 20


# --- messages (docs.px4.io "ULog File Format": a 3-byte header, uint16 size then a type letter, then the payload) ---

def message(kind, payload):
    """One ULog message: its header (payload size, type letter) and `payload`."""
    return struct.pack("<HB", len(payload), ord(kind)) + payload


def file_header(start_us=START_US, version=1):
    """The 16-byte file header: magic, version, start timestamp (µs)."""
    return ULOG_MAGIC + bytes([version]) + struct.pack("<Q", start_us)


def flag_bits(compat=bytes(8), incompat=bytes(8)):
    """The flag bits message ('B'), which must come right after the header; no appended data."""
    return message("B", bytes(compat) + bytes(incompat) + bytes(24))


def info_message(key, value, value_type=None):
    """An info message ('I'): a string value by default, or `value` packed as `value_type` (e.g. "int32_t")."""
    if value_type is None:
        data = value.encode()
        value_type = f"char[{len(data)}]"
    else:
        data = struct.pack("<" + {"int32_t": "i", "uint32_t": "I", "float": "f", "uint8_t": "B"}[value_type], value)
    type_key = f"{value_type} {key}".encode()
    return message("I", bytes([len(type_key)]) + type_key + data)


def parameter_message(name, value):
    """A parameter message ('P'): an int32_t or a float."""
    value_type = "float" if isinstance(value, float) else "int32_t"
    type_key = f"{value_type} {name}".encode()
    return message("P", bytes([len(type_key)]) + type_key + struct.pack("<f" if value_type == "float" else "<i", value))


def format_message(name, fields):
    """A format message ('F'): `fields` is a list of "type name" strings, e.g. ["uint64_t timestamp", ...]."""
    return message("F", (name + ":" + "".join(field + ";" for field in fields)).encode())


def subscription_message(msg_id, name, multi_id=0):
    """A subscription ('A', add logged message): data messages with `msg_id` carry topic `name`."""
    return message("A", struct.pack("<BH", multi_id, msg_id) + name.encode())


def data_message(msg_id, payload):
    """A data message ('D'): the subscription's id, then the topic's fields (timestamp first here)."""
    return message("D", struct.pack("<H", msg_id) + payload)


def logging_message(text, timestamp, level=LOG_LEVEL_INFO):
    """A logged string ('L'): level, timestamp, text."""
    return message("L", struct.pack("<BQ", level, timestamp) + text)


def sync_message():
    """A synchronization message ('S')."""
    return message("S", SYNC_MAGIC)


def dropout_message(duration_ms):
    """A dropout message ('O'): the logger lost data for `duration_ms`."""
    return message("O", struct.pack("<H", duration_ms))


# --- whole files ----------------------------------------------------------------------------------------------------

def _definitions(seed, data_bytes):
    """Header, definitions and the subscription: everything before the data messages."""
    generator = random.Random(f"definitions:{seed}")
    return b"".join([
        file_header(START_US + seed),
        flag_bits(),
        format_message(TOPIC, ["uint64_t timestamp", f"uint8_t[{data_bytes}] data"]),
        info_message("sys_name", "PX4"),
        info_message("ver_hw", "SITL"),
        info_message("ver_sw", generator.randbytes(20).hex()),
        info_message("sys_uuid", generator.randbytes(12).hex()),
        parameter_message("MAV_TYPE", 2),  # quadrotor
        subscription_message(0, TOPIC),
    ])


def _data_bytes_for(size):
    """The data payload: DATA_BYTES, less for small logs so that they still hold several data messages."""
    room = size - len(_definitions(0, DATA_BYTES)) - _FILLER_HEAD
    return max(MIN_DATA_BYTES, min(DATA_BYTES, room // 8 - 10))


MIN_ULOG_SIZE = len(_definitions(0, MIN_DATA_BYTES)) + 3 + 2 + 8 + MIN_DATA_BYTES + _FILLER_HEAD
"""The smallest write_log() output that is a ULog (definitions, one data message, the final logged string)."""


def _ulog_blocks(size, seed, data_bytes=None):
    """Yield the bytes of a valid ULog of exactly `size` bytes (>= MIN_ULOG_SIZE), in blocks of about 1 MiB."""
    data_bytes = data_bytes or _data_bytes_for(size)
    head = _definitions(seed, data_bytes)
    data_size = 3 + 2 + 8 + data_bytes
    if size < len(head) + data_size + _FILLER_HEAD or data_size + _FILLER_HEAD + 11 > MAX_PAYLOAD + 3:
        raise ValueError(f"no ULog of {size} bytes with {data_bytes}-byte data messages")
    generator = random.Random(f"{seed}:{size}")
    block, pending, left = [head], len(head), size - len(head)
    stamp, written, sync_due = START_US + seed, 0, False
    while True:
        item = sync_message() if sync_due else None
        if left - (len(item) if item else data_size) < _FILLER_HEAD:  # the rest is the final logged string
            break
        if item is None:
            stamp += STEP_US
            item = data_message(0, struct.pack("<Q", stamp) + generator.randbytes(data_bytes))
            written += 1
        sync_due = not sync_due and written % SYNC_EVERY == 0
        block.append(item)
        left -= len(item)
        pending += len(item)
        if pending >= WRITE_BLOCK:
            yield b"".join(block)
            block, pending = [], 0
    text = (b"filesync test log " * (left // 18 + 1))[:left - _FILLER_HEAD]
    block.append(logging_message(text, stamp))
    yield b"".join(block)


def _write_blocks(path, blocks):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for block in blocks:
            handle.write(block)
            digest.update(block)
    return digest.hexdigest()


def write_log(path, size, seed=0, *, data_bytes=None):
    """Write a valid ULog file of exactly `size` bytes, deterministic from (seed, size); return its sha256 hex.

    Sizes below MIN_ULOG_SIZE cannot hold a ULog: they get write_bytes()'s content instead (tests of MAVLink FTP
    edge sizes such as 0, 1, 239 bytes use those). `data_bytes` sets the data messages' payload (default: DATA_BYTES,
    less for small logs; at most 65,500). Memory stays flat whatever the size.
    """
    if size < MIN_ULOG_SIZE:
        return write_bytes(path, size, seed)
    return _write_blocks(path, _ulog_blocks(size, seed, data_bytes))


def write_bytes(path, size, seed=0):
    """Write `size` deterministic random bytes that are not a ULog (no magic); return their sha256 hex."""
    generator = random.Random(f"bytes:{seed}:{size}")

    def blocks():
        left = size
        first = True
        while left:
            block = generator.randbytes(min(left, WRITE_BLOCK))
            if first and block.startswith(ULOG_MAGIC[:1]):
                block = b"\0" + block[1:]  # never the magic, whatever the seed
            first = False
            left -= len(block)
            yield block
    return _write_blocks(path, blocks())


def write_magic_and_random(path, size, seed=0):
    """Write the ULog magic then random bytes (what write_log wrote before it wrote ULog); return the sha256 hex.

    pyulog 1.3.0 refuses most such files of up to tens of kB (seed 0 at 1,000, 10,000 and 35,000 bytes; about 9 seeds
    in 10): reading them as messages it meets a corrupt one near the end and seeks back before the start of the file
    (OSError), so Flight Review answers 400. From about 100 kB most parse as "corrupt but readable", which the real
    server accepts too, and some take pyulog longer than 10 s (it re-reads up to 64 kB at every byte it skips).
    """
    generator = random.Random(f"{seed}:{size}")

    def blocks():
        left = size
        first = True
        while left:
            block = generator.randbytes(min(left, WRITE_BLOCK))
            if first:
                block = (ULOG_MAGIC + block[len(ULOG_MAGIC):])[:len(block)]
                first = False
            left -= len(block)
            yield block
    return _write_blocks(path, blocks())


def write_truncated_log(path, size, seed=0):
    """Write a ULog of exactly `size` bytes that ends inside a data message, as a log cut by a power loss does.

    It is a valid log of fewer bytes followed by the first half of one more data message; pyulog reads it (it stops at
    the cut message). Return the sha256 hex.
    """
    data_bytes = _data_bytes_for(size)
    cut = data_message(0, struct.pack("<Q", START_US) + random.Random(f"cut:{seed}").randbytes(data_bytes))
    cut = cut[:len(cut) // 2]
    if size - len(cut) < MIN_ULOG_SIZE:
        raise ValueError(f"a truncated log needs at least {MIN_ULOG_SIZE + len(cut)} bytes, not {size}")
    blocks = _ulog_blocks(size - len(cut), seed, data_bytes)
    return _write_blocks(path, itertools.chain(blocks, [cut]))


GARBLED_BYTES = 64


def write_garbled_log(path, size, seed=0):
    """Write a ULog of exactly `size` bytes whose middle has GARBLED_BYTES of random bytes over message headers.

    Flash corruption of that kind leaves the rest readable: pyulog notices it (file_corruption is True), skips to the
    next sync message and reads on. The garbled run starts at a data message's header in the middle of the data
    section. Needs at least 4 * SYNC_EVERY data messages. Return the sha256 hex.
    """
    data_bytes = _data_bytes_for(size)
    head = len(_definitions(seed, data_bytes))
    data_size = 3 + 2 + 8 + data_bytes
    messages = (size - head) // data_size
    if messages < 4 * SYNC_EVERY:
        raise ValueError(f"a garbled log of {size} bytes holds {messages} data messages, fewer than {4 * SYNC_EVERY}")
    # the data message after the middle sync message: SYNC_EVERY data messages then one sync, repeated
    middle = (messages // SYNC_EVERY // 2) * SYNC_EVERY
    start = head + middle * data_size + (middle // SYNC_EVERY) * len(sync_message())
    garbage = random.Random(f"garbled:{seed}:{size}").randbytes(GARBLED_BYTES)
    offset = 0

    def blocks():
        nonlocal offset
        for block in _ulog_blocks(size, seed, data_bytes):
            lo, hi = max(start - offset, 0), min(start + GARBLED_BYTES - offset, len(block))
            if lo < hi:
                block = block[:lo] + garbage[offset + lo - start:offset + hi - start] + block[hi:]
            offset += len(block)
            yield block
    return _write_blocks(path, blocks())
