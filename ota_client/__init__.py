"""Vehicle side of the OTA system: verification, payload application, slots and boot control.

This package never imports ``ota_server``. The server imports the pure format code that lives
here (target names, the metadata custom-field schema, later the payload reader) so that both
sides agree on one definition.
"""

__version__ = "0.1.0"
