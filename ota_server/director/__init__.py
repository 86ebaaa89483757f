"""The Director repository: per-vehicle assignments, signed on demand (Uptane)."""
