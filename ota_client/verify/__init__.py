"""Verification of repository metadata and targets on the vehicle."""
