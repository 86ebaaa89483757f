"""The payload format (DESIGN §4): one format for full images and deltas, applied as a stream."""
