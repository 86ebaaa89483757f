"""State shared by ``ota`` commands: the server home, its config, and how to get passphrases."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import click

from ota_server.cli.render import warn
from ota_server.config import ServerConfig, load_config
from ota_server.errors import KeyStoreError
from ota_server.fleet.ca import CertificateAuthority
from ota_server.keys.store import PassphraseSource
from ota_server.repository.home import RepositoryHome, open_home

PASSPHRASE_ENV = "OTA_KEY_PASSPHRASE"


def passphrase_source(*, interactive: bool) -> PassphraseSource:
    """Passphrase from ``OTA_KEY_PASSPHRASE``, else a prompt (asked once per command)."""
    cache: list[bytes] = []

    def get(new: bool) -> bytes:
        if cache:
            return cache[0]
        value = os.environ.get(PASSPHRASE_ENV)
        if value is None:
            if not (interactive and sys.stdin.isatty()):
                raise KeyStoreError(
                    f"the keys are encrypted: set {PASSPHRASE_ENV} or run in a terminal "
                    "(or use --dev keys for a throwaway setup)"
                )
            prompt = "Passphrase for the new keys" if new else "Key passphrase"
            value = click.prompt(prompt, hide_input=True, confirmation_prompt=new, err=True)
        if not value:
            raise KeyStoreError("the key passphrase must not be empty")
        cache.append(value.encode())
        return cache[0]

    return get


@dataclass
class CliContext:
    home: Path
    interactive: bool = True
    _homes: dict[str, RepositoryHome] = field(default_factory=dict, repr=False)

    @cached_property
    def config(self) -> ServerConfig:
        return load_config(self.home)

    @cached_property
    def _passphrase(self) -> PassphraseSource:
        return passphrase_source(interactive=self.interactive)

    def repository(self, name: str) -> RepositoryHome:
        """One of the home's repositories; both share one passphrase prompt per command."""
        if name not in self._homes:
            self._homes[name] = open_home(self.config, name, self._passphrase, notice=warn)
        return self._homes[name]

    @cached_property
    def ca(self) -> CertificateAuthority:
        """The home's CA (``state/ca``), its key encrypted unless the home has --dev keys."""
        keys = self.image.keys
        dev = keys.exists() and keys.dev
        return CertificateAuthority(
            self.config.layout.state / "ca", self._passphrase, encrypted=not dev
        )

    @property
    def image(self) -> RepositoryHome:
        return self.repository("image")

    @property
    def director(self) -> RepositoryHome:
        return self.repository("director")


pass_cli = click.make_pass_decorator(CliContext)
