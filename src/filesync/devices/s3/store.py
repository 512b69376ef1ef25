"""What an S3 endpoint was found to do, probed once per endpoint per process and kept for every target on it: how
its copies are verified (STORE_CHECKSUM, ETAG_MD5 or READ_BACK; see target.py's module doc) and whether it honours
If-None-Match: *."""
import hashlib
import threading
from dataclasses import dataclass

import botocore.exceptions

from filesync.devices.s3.multipart import b64

DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
# How a store's copies are verified (S3Target.verified_by), found once per endpoint per process (_STORES)
STORE_CHECKSUM, ETAG_MD5, READ_BACK = "store checksum", "ETag MD5", "read back"
PROBE_BODY = b"filesync: does this store check x-amz-checksum-sha256, and honour If-None-Match?\n"
PROBE_NAME = ".filesync-store-probe"
_STORES = {}
_STORES_LOCK = threading.Lock()


def error_status(error):
    """The S3 error code and HTTP status of what boto3 raised; ("", 0) for anything else."""
    if isinstance(error, botocore.exceptions.ClientError):
        return (str(error.response.get("Error", {}).get("Code", "")),
                error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return "", 0


def forget_stores():
    """Forget what was found about every endpoint; the next use of each probes it again (for a process whose endpoints
    may now be other stores: tests start servers on reused ports)."""
    with _STORES_LOCK:
        _STORES.clear()


@dataclass(frozen=True)
class Store:
    """What an endpoint was found to do (S3Target.store()): how its copies are verified, and whether it refuses a
    PUT with If-None-Match: * onto a key that exists."""
    verification: str
    if_none_match: bool


@dataclass
class Known:
    """What the store must compute for an object this process published, if it holds the bytes sent: its ETag (the
    body's MD5; multipart: the MD5 of the parts' MD5s, "-<parts>") or its composite checksum (multipart); and the
    SHA-256 those bytes have."""
    sha256: str
    etag: str = ""
    composite: str = ""


def found_store(endpoint):
    """What `endpoint` was found to do, or None before its probe; never asks the store."""
    with _STORES_LOCK:
        return _STORES.get(endpoint)


def store_of(endpoint, probe):
    """What `endpoint` does: probe() (returning a Store) at the first call in this process, then the kept answer.
    Two threads may both probe at first; the first answer kept is the one every target uses."""
    found = found_store(endpoint)
    if found is None:
        found = probe()
        with _STORES_LOCK:
            found = _STORES.setdefault(endpoint, found)
    return found


def probe_store(put):
    """The Store found by sending PROBE_BODY with put(**arguments) (a PutObject onto one key): first with a wrong
    x-amz-checksum-sha256 (a store that refuses it checks checksums; else one whose ETag is the body's MD5 has its
    ETags checked; else copies are read back), then with If-None-Match: * onto the key now taken (a 412: honoured).
    Raises what put() raises beyond those expected refusals."""
    right = b64(hashlib.sha256(PROBE_BODY).digest())
    wrong = b64(hashlib.sha256(PROBE_BODY + b"(other bytes)").digest())
    try:
        etag = put(ChecksumSHA256=wrong).get("ETag", "").strip('"')
        verification = ETAG_MD5 if etag == hashlib.md5(PROBE_BODY, usedforsecurity=False).hexdigest() else READ_BACK
    except Exception as error:
        if error_status(error)[0] not in DIGEST_CODES:
            raise
        verification = STORE_CHECKSUM  # it refused bytes that do not match their checksum: it checks
        put(ChecksumSHA256=right)
    try:
        put(ChecksumSHA256=right, IfNoneMatch="*")
        if_none_match = False
    except Exception as error:
        code, status = error_status(error)
        if status != 412 and code != "PreconditionFailed":
            raise
        if_none_match = True
    return Store(verification, if_none_match)
