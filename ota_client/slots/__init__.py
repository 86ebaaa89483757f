"""A/B slots: raw images (a file or a block device) and directories (application bundles),
and the guard that keeps every write off the booted slot."""
