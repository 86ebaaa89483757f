"""Errors sorted by cause. Each carries a one-line message that says what to do.

The CLI turns any ``OtaError`` into that line and a non-zero exit; the HTTP layer maps them to
status codes. Everything else is a bug and is reported as one.
"""


class OtaError(Exception):
    """Base of every error the operator is meant to read."""


class InputError(OtaError):
    """Bad operator input: a manifest, an argument, a file that is not what it claims."""


class RevokedError(InputError):
    """The vehicle was revoked (``ota vehicle revoke``): refused, whatever it sends."""


class KeyStoreError(OtaError):
    """Missing or unreadable keys, a wrong passphrase, a threshold that cannot be met."""


class RepositoryStateError(OtaError):
    """The repository is missing, locked by another writer, or not in the expected state."""


class ConfigError(OtaError):
    """The server's config.toml is malformed or holds an unknown setting."""


class DatabaseError(OtaError):
    """The fleet database cannot be reached or used, or its schema is not this server's."""
