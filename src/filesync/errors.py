"""The error classes every device maps its failures to, and what the engine does with each: one table, one place.

| class             | the engine                                                                   | examples                        |
|-------------------|------------------------------------------------------------------------------|---------------------------------|
| DeviceUnavailable | waits for the device: the worker probes it, no attempt is counted            | host down, drive pulled out     |
| AuthRefused       | waits likewise (a wrong password is wrong for every file): one clear line   | FTP 530, HTTP 401/403           |
| DeviceFault       | waits likewise, shown as ERROR: the device answers but serves nothing right  | MAVROS <= 1.21.0 empty reads    |
| TransientError    | retries this file later, with capped backoff, for as long as it takes        | full disk, dropped transfer     |
| StartOver         | drops what the target holds of this file and sends it again from byte 0      | FTP 451 Append/Restart refused  |
| FileError         | retries this file, then parks it after max_attempts                          | bad block, CRC mismatch         |
| PermanentError    | parks this file at once with the reason, until a person retries it           | server refuses the file         |
| SkipFile          | marks this file skipped for this target (it does not take such files)        | a non-ULog file to Flight Review|
| UnsafePath        | parks the file: its name cannot be carried safely                            | '..' in a listed name           |
| Vanished          | the file is no longer on the device (parks a copy; a removal counts as done) | deleted meanwhile               |

Anything else counts as TransientError and is logged in full. `action()` gives the table's verb for an error.
"""


class FilesyncError(Exception):
    """Base of filesync's own errors."""


class ConfigError(FilesyncError):
    """A configuration value is missing or wrong; the message names the key (never a secret's value)."""


class TransientError(FilesyncError):
    """Trying again later may succeed; the transfer keeps its checkpoint and waits with backoff."""


class DeviceUnavailable(TransientError):
    """The device or server cannot be reached at all (unplugged, host down); nothing about the file is wrong."""


class DeviceFault(DeviceUnavailable):
    """The device answers but cannot serve any file (a bug of the link: MAVROS <= 1.21.0 reading 0 bytes): waited out
    like an unreachable device, no attempt counted against files, shown as ERROR with the reason."""


class AuthRefused(DeviceUnavailable):
    """The device refuses our credentials: every file would fail alike, so wait for a fix instead of parking files."""


class StartOver(TransientError):
    """The target cannot continue an interrupted upload (it refuses restarts): send the file again from byte 0."""


class FileError(TransientError):
    """Something is wrong with this one file (a bad block, an invalid cluster): retried max_attempts times, then parked."""


class PermanentError(FilesyncError):
    """Retrying cannot succeed; the file is parked with this reason until a person retries it."""


class SkipFile(PermanentError):
    """This target does not take this file (Flight Review and a non-ULog file): marked skipped with the reason."""


class UnsafePath(PermanentError):
    """A file name would land outside staging or the target root, or cannot be carried by the device."""


class Vanished(PermanentError):
    """The file is no longer on the device."""


class FinalNameTaken(FilesyncError):
    """Target.publish found its final name taken by another file meanwhile; the engine applies on_conflict again."""


class Stopping(Exception):
    """The process is shutting down and a call was cut short for it: not a failure (a worker ends its step quietly;
    a claimed task's lease runs out and it is taken up again from its checkpoint, as after a crash)."""


WAIT, RETRY, START_OVER, RETRY_FILE, PARK, SKIP = "wait", "retry", "start over", "retry file", "park", "skip"

# Most specific first: the first class an error is an instance of decides.
ACTIONS = (
    (DeviceUnavailable, WAIT),
    (StartOver, START_OVER),
    (FileError, RETRY_FILE),
    (TransientError, RETRY),
    (SkipFile, SKIP),
    (PermanentError, PARK),
)


def action(error) -> str:
    """What the engine does with `error`: one of wait, retry, start over, retry file, park, skip (see the table)."""
    for kind, verb in ACTIONS:
        if isinstance(error, kind):
            return verb
    return RETRY
