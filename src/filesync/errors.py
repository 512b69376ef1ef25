"""The error kinds the transfer engine acts on.

A device raises DeviceUnavailable when the device or server cannot be reached (the worker pauses and probes, counting no
attempt), TransientError when trying again later may succeed (a full disk, a dropped transfer: retried with backoff for as
long as it takes), FileError when one file keeps failing (parked after max_attempts), and PermanentError when retrying
never helps (the target refuses the file: parked at once). Anything else counts as TransientError and is logged in full.
"""


class FilesyncError(Exception):
    """Base of filesync's own errors."""


class ConfigError(FilesyncError):
    """A configuration value is missing or wrong; the message names the key."""


class TransientError(FilesyncError):
    """Trying again later may succeed; the transfer keeps its checkpoint and waits with backoff."""


class DeviceUnavailable(TransientError):
    """The device or server cannot be reached at all (unplugged, host down); nothing about the file is wrong."""


class FileError(TransientError):
    """Something is wrong with this one file (a bad block, an invalid cluster): retried max_attempts times, then parked."""


class PermanentError(FilesyncError):
    """Retrying cannot succeed; the file is parked with this reason until a person retries it."""


class SkipFile(PermanentError):
    """This target does not take this file (Flight Review and a non-ULog file): marked skipped with the reason."""


class UnsafePath(PermanentError):
    """A file name would land outside staging or the target root."""
