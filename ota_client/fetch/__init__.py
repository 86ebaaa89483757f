"""Network access for the vehicle: one HTTP transport, python-tuf's fetcher over it."""
