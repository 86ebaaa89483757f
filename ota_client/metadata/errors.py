"""The one error family of the metadata contract."""


class MetadataFormatError(ValueError):
    """A name or custom field does not follow the contract (bad data, never retried)."""
