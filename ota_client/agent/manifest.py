"""The vehicle's signed version manifest: built from the persisted state, signed by each ECU.

Each ECU's report is signed with that ECU's own key (``[[ecus]] key``), the whole manifest
with the primary's. The counter grows every time a manifest is made — it is kept in
``manifest-counter`` beside the state (written atomically) and never goes below the clock in
milliseconds, so a wiped data folder does not replay old counters either. The attack flag
carries the latest security event the vehicle recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from securesystemslib.signer import CryptoSigner

from ota_client.agent.records import VehicleState
from ota_client.atomic import write_atomic
from ota_client.config import ClientConfig, load_signer
from ota_client.errors import ConfigError, DeviceError
from ota_client.metadata.manifest import (
    MAX_ATTACK,
    EcuReport,
    InstalledImage,
    sign,
    vehicle_manifest,
)
from ota_client.strict import FormatError, printable, read_bounded


class ManifestMaker:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.counter_file = config.data_dir / "manifest-counter"
        self._signers: dict[str, CryptoSigner] = {}

    def signer(self, serial: str) -> CryptoSigner:
        if serial not in self._signers:
            ecu = next(e for e in self.config.ecus if e.serial == serial)
            if ecu.key is None:
                raise ConfigError(f"ECU {serial} has no key to sign its version report")
            self._signers[serial] = load_signer(ecu.key)
        return self._signers[serial]

    def _next_counter(self, now: float) -> int:
        try:
            previous = int(read_bounded(self.counter_file, 32, "manifest-counter").decode())
        except (FileNotFoundError, FormatError, ValueError, UnicodeDecodeError):
            previous = 0
        counter = max(previous + 1, int(now * 1000))
        try:
            self.counter_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.counter_file, str(counter).encode())
        except OSError as e:
            raise DeviceError(f"cannot keep the manifest counter: {e.strerror or e}") from None
        return counter

    def make(self, state: VehicleState, now: float) -> bytes:
        counter = self._next_counter(now)
        attack = state.security[-1].message[:MAX_ATTACK] if state.security else ""
        reports: Mapping[str, object] = {
            ecu.serial: sign(
                EcuReport(
                    ecu.serial,
                    _image(state, ecu.serial),
                    printable(attack, MAX_ATTACK) if attack else "",
                    int(now),
                    counter,
                ).signed(),
                self.signer(ecu.serial),
            )
            for ecu in self.config.ecus
        }
        primary = self.config.primary.serial
        signed = vehicle_manifest(self.config.vehicle_id, primary, reports)
        return json.dumps(sign(signed, self.signer(primary))).encode()


def _image(state: VehicleState, serial: str) -> InstalledImage | None:
    installed = state.record(serial).installed
    if installed is None:
        return None
    return InstalledImage(installed.path, installed.length, installed.sha256)
