"""Fleet state in the fleet database (``db``, ``schema``): inventory and vehicle reports."""
