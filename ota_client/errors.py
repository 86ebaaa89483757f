"""The vehicle client's one error family, sorted by cause.

Every error the client expects is a ``ClientError``; its subclass says what the shell does
about it and which exit code the command line gives (mapped once, in ``cli``):

| error            | cause                                         | the agent                     |
|------------------|-----------------------------------------------|-------------------------------|
| ConfigError      | the integrator's configuration                | refuses to start              |
| TransportError   | network: unreachable, HTTP error, too slow    | keeps progress, retries later |
| DeviceError      | slots, boot control, local disk               | abandons the update           |
| BadDataError     | malformed data (server or local files)        | abandons the update           |
| SecurityError    | signature, hash, rollback, endless data       | records it, never retries     |

Anything else escaping is a bug; the CLI still prints one line for it.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the client expects."""

    kind = "error"
    exit_code = 1


class ConfigError(ClientError):
    """The client configuration is malformed or names something that cannot work."""

    kind = "config"
    exit_code = 3


class TransportError(ClientError):
    """The server could not be reached, failed, or stopped sending: retry later."""

    kind = "transport"
    exit_code = 4


class HttpStatusError(TransportError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class DeviceError(ClientError):
    """A slot, the boot control or the data directory failed (disk full, too small, missing)."""

    kind = "device"
    exit_code = 5


class BadDataError(ClientError):
    """Data that does not follow its format: a payload, metadata, a persisted file."""

    kind = "bad_data"
    exit_code = 6


class SecurityError(BadDataError):
    """Verification failed: signature, hash, expiry, rollback, release counter, endless data.

    Never retried in a loop: the target is given up and the event is reported as such.
    """

    kind = "security"
    exit_code = 7
