"""The ``ota`` command line: thin click commands over the server's core functions."""
