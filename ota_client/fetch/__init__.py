"""Network access for the vehicle: metadata fetcher for python-tuf, later resumable downloads."""
