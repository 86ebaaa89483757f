"""Signing keys of the Image repository: generation, encrypted storage, loading signers."""
