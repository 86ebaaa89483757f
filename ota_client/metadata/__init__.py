"""The metadata contract shared by server and client (DESIGN §3): target names and custom fields."""

from ota_client.metadata.fields import MetadataFormatError, SourceInfo, TargetCustom
from ota_client.metadata.names import check_identifier, check_target_path

__all__ = [
    "MetadataFormatError",
    "SourceInfo",
    "TargetCustom",
    "check_identifier",
    "check_target_path",
]
