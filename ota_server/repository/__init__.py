"""The Uptane Image repository: TUF metadata on disk, releases, transactions."""
