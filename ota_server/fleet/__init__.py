"""Fleet state: what vehicles tell the server (reports), until the fleet database lands."""
