"""Server side of the OTA system: the signed Image repository, payloads, Director and fleet."""
