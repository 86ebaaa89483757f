"""The aiohttp application: static repository files now, Director and fleet API later."""
