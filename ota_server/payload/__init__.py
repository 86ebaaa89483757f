"""Payload generation: deltas and full-image payloads in the format of ``ota_client.payload``."""
