"""The one error family of the metadata contract, and how its messages quote bad values."""

MAX_SHOWN = 80  # characters of a bad value quoted in an error message


class MetadataFormatError(ValueError):
    """A name or custom field does not follow the contract (bad data, never retried)."""


def show(value: object) -> str:
    """``repr(value)``, cut so that an error message stays one readable line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"
