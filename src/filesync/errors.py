"""The error kinds the transfer engine acts on.

A device raises TransientError when trying again later may succeed (server gone, disk full, link lost) and PermanentError
when it never will (the target refuses the file). Anything else is treated as transient and logged with its traceback.
"""


class FilesyncError(Exception):
    """Base of filesync's own errors."""


class ConfigError(FilesyncError):
    """A configuration value is missing or wrong; the message names the key."""


class TransientError(FilesyncError):
    """Trying again later may succeed; the transfer keeps its checkpoint and waits with backoff."""


class DeviceUnavailable(TransientError):
    """The device or server cannot be reached at all (unplugged, host down); nothing about the file is wrong."""


class PermanentError(FilesyncError):
    """Retrying cannot succeed; the file is parked with this reason until a person retries it."""


class UnsafePath(PermanentError):
    """A file name would land outside staging or the target root."""
