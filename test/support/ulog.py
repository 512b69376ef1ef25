"""Log files for tests: they start like a PX4 ULog and continue with deterministic bytes."""
import hashlib
import os
import random

ULOG_MAGIC = b"ULog\x01\x12\x35"


def write_log(path, size, seed=0):
    """A file that starts like a ULog and continues with deterministic bytes; returns its content's sha256."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    generator = random.Random(f"{seed}:{size}")
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left, first = size, True
        while left:
            block = generator.randbytes(min(left, 1 << 20))
            if first:
                block = (ULOG_MAGIC + block[len(ULOG_MAGIC):])[:len(block)]
                first = False
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()
