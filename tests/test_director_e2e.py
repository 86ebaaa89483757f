"""The Director end to end: provision a two-ECU vehicle, assign it a bundle, and watch the real
``ota-client`` install both images or neither, against the real ``ota serve`` over mutual TLS.

Attacks on the same rig: another vehicle's certificate, a revoked vehicle, and Director
metadata validly signed with the Director's keys that assigns software the Image repository
never signed (Uptane "arbitrary software"), or counters that differ from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import random
import shutil
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from click.testing import CliRunner
from tuf.api.metadata import Metadata, MetaFile, TargetFile
from tuf.api.serialization.json import JSONSerializer

from ota_client.agent.manifest import ManifestMaker, load_signer
from ota_client.agent.records import VehicleState
from ota_client.cli import main as client_main
from ota_client.config import load_config as load_client_config
from ota_client.metadata.assignment import Assignment, EcuAssignment, Payload
from ota_client.metadata.manifest import sign
from ota_server.config import load_config
from ota_server.director.sign import SignedVehicle, content_digest, sign_vehicle
from ota_server.fleet.db import open_database, url_for
from ota_server.fleet.schema import DirectorMetadata
from ota_server.repository.home import open_home
from ota_server.repository.signing import RoleSigning
from ota_server.repository.store import latest_root
from tests import mutate
from tests.helpers import EXAMPLES, make_home, ok, one_line_error, ota, serve, tree, use_database
from tests.hostile import SPECIALS, Special, deadline, place

ECUS = ("--ecu", "HU-1:hu-imx8:primary", "--ecu", "TCU-1:tcu-9150")


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(
        tmp_path_factory.mktemp("director"),
        EXAMPLES / "infotainment-2.0.0.toml",
        EXAMPLES / "infotainment-2.1.0.toml",
    )


@pytest.fixture
def home(tmp_path: Path, _template: Path, database_url: str) -> Path:
    """The home on its own fleet database: every test here runs on SQLite and PostgreSQL."""
    shutil.copytree(_template, tmp_path / "home")
    use_database(tmp_path / "home", database_url)
    return tmp_path / "home"


def provision(
    home: Path, where: Path, vin: str = "VIN0001", *ecus: str, factory: bool = True
) -> Path:
    out = where / vin
    args = ("--factory", "infotainment@2.0.0") if factory else ()
    ok(ota(home, "vehicle", "provision", vin, *(ecus or ECUS), *args, "--out", out))
    return out


def point(car: Path, url: str) -> None:
    """Point the vehicle's client.toml at ``url`` (plain HTTP allowed for http:// URLs)."""
    text = (car / "client.toml").read_text()
    server = url.removesuffix("/repo")
    lines = [
        f'server = "{server}"' if line.startswith("server = ") else line
        for line in text.splitlines()
    ]
    if server.startswith("http:") and "allow_insecure_http = true" not in text:
        lines.insert(lines.index("[network]") + 1, "allow_insecure_http = true")
    (car / "client.toml").write_text("\n".join(lines) + "\n")


def client_bytes(car: Path, name: str) -> bytes:
    """A Director file as the vehicle's python-tuf cache holds it (by role name)."""
    role = name.split(".")[-2]
    return (car / f"data/tuf-director/metadata/{role}.json").read_bytes()


def client(car: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    point(car, url)
    return subprocess.run(
        [sys.executable, "-m", "ota_client", "-c", str(car / "client.toml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def status(car: Path, url: str) -> dict[str, Any]:
    result = client(car, url, "status", "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def installed(car: Path, url: str) -> dict[str, str | None]:
    return {e["ecu"]: (e["installed"] or {}).get("version") for e in status(car, url)["ecus"]}


def test_a_two_ecu_vehicle_installs_its_assigned_bundle(home: Path, tmp_path: Path) -> None:
    car = provision(home, tmp_path)
    assert (car / "slots/HU-1-a.img").read_bytes() == (
        EXAMPLES / "images/head-unit-2.0.0.img"
    ).read_bytes()
    with serve(home, "--tls") as url:
        assert url.startswith("https://")
        result = client(car, url, "update")
        assert result.returncode == 0, result.stderr
        assert installed(car, url) == {"HU-1": None, "TCU-1": None}  # nothing assigned yet
        out = json.loads(ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0", "--json")).stdout)
        assert [e["serial"] for e in out["ecus"]] == ["HU-1", "TCU-1"]
        result = client(car, url, "update")
        assert result.returncode == 0, result.stderr
        assert installed(car, url) == {"HU-1": "2.1.0", "TCU-1": "2.1.0"}
    # The vehicle's signed version manifest told the server what each ECU runs now.
    shown = json.loads(ok(ota(home, "vehicle", "show", "VIN0001", "--json")).stdout)
    assert [(e["installed"], e["release_counter"]) for e in shown["ecus"]] == [
        ("hu-imx8/head-unit-2.1.0.img", 2),
        ("tcu-9150/telematics-2.1.0.bin", 2),
    ]


def test_one_ecu_failing_its_trial_rolls_both_back(home: Path, tmp_path: Path) -> None:
    car = provision(home, tmp_path)
    with (car / "client.toml").open("a") as f:  # the last [[ecus]] section is TCU-1's
        f.write('[[ecus.health]]\ncommand = ["false"]\n')
    ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0"))
    with serve(home, "--tls") as url:
        result = client(car, url, "update")
        assert result.returncode != 0
        doc = status(car, url)
    assert {e["ecu"]: e["active_slot"] for e in doc["ecus"]} == {"HU-1": "a", "TCU-1": "a"}
    assert all(e["rejected"] for e in doc["ecus"])  # given up on both: not retried in a loop


def _request(url: str, path: str, car: Path | None, ca: Path, body: bytes | None = None) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    if car is not None:
        context.load_cert_chain(car / "vehicle.pem", car / "vehicle.key")
    host, port = url.removeprefix("https://").split("/")[0].split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        conn.request("GET" if body is None else "POST", path, body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def test_version_manifests_are_checked_against_the_inventory(home: Path, tmp_path: Path) -> None:
    one = provision(home, tmp_path, "VIN0001")
    two = provision(home, tmp_path, "VIN0002", "--ecu", "HU-2:hu-imx8", "--ecu", "TCU-2:tcu-9150")
    maker = ManifestMaker(load_client_config(one / "client.toml"))
    manifest = maker.make(VehicleState(), 1_800_000_000.0)
    path = "/api/v1/vehicles/VIN0001/manifest"
    with serve(home, "--tls") as url:
        ca = one / "ca.pem"
        assert _request(url, path, one, ca, manifest) == 200
        assert _request(url, path, one, ca, manifest) == 400  # replayed
        newer = json.loads(maker.make(VehicleState(), 1_800_000_001.0))
        assert _request(url, path, two, ca, json.dumps(newer).encode()) == 403  # not its VIN
        forged = json.loads(json.dumps(newer))
        forged["signed"]["ecu_version_reports"]["TCU-1"]["signed"]["attacks_detected"] = "x"
        assert _request(url, path, one, ca, json.dumps(forged).encode()) == 400  # bad signature
        other = ManifestMaker(load_client_config(two / "client.toml"))
        theirs = json.loads(other.make(VehicleState(), 1_800_000_002.0))
        assert _request(url, path, one, ca, json.dumps(theirs).encode()) == 400  # VIN0002's
        unknown = json.loads(json.dumps(newer))
        reports = unknown["signed"]["ecu_version_reports"]
        reports["ECU-X"] = reports["TCU-1"]
        assert _request(url, path, one, ca, json.dumps(unknown).encode()) == 400
        # Behind a valid primary signature (U-55, U-59): the inventory still decides.
        primary = maker.signer("HU-1")
        for change, reason in [
            (lambda d: d.update(vin="VIN0002"), "for vehicle VIN0002"),
            (lambda d: d["ecu_version_reports"].update(
                {"ECU-X": d["ecu_version_reports"]["TCU-1"]}), "ECU-X is not an ECU"),
            (lambda d: d["ecu_version_reports"].update(
                {"TCU-1": d["ecu_version_reports"]["HU-1"]}), "signed by its key"),
            (lambda d: d["ecu_version_reports"]["TCU-1"]["signed"].update(
                attacks_detected="edited"), "does not verify"),
            (lambda d: d.update(primary_ecu_serial="TCU-1"), "not the primary"),
        ]:  # fmt: skip
            signed = json.loads(json.dumps(newer["signed"]))
            change(signed)
            body = json.dumps(sign(signed, primary)).encode()
            status_, text = _api(url, "POST", path, ca, body=body, car=one)
            assert status_ == 400 and reason in str(text), (reason, text)
        assert _request(url, path, one, ca, b"{" * 100) == 400
        assert _request(url, path, one, ca, json.dumps(newer).encode()) == 200  # still fine


def test_a_vehicle_reads_only_its_own_metadata(home: Path, tmp_path: Path) -> None:
    one = provision(home, tmp_path, "VIN0001")
    two = provision(home, tmp_path, "VIN0002", "--ecu", "HU-2:hu-imx8", "--ecu", "TCU-2:tcu-9150")
    # U-82, U-68: every ECU has its own key; the inventory holds its public half only.
    keyids = {}
    for car, vin in ((one, "VIN0001"), (two, "VIN0002")):
        shown = json.loads(ok(ota(home, "vehicle", "show", vin, "--json")).stdout)
        for ecu in shown["ecus"]:
            signer = load_signer(car / f"keys/{ecu['serial']}.pem")
            assert signer.public_key.keyid == ecu["keyid"]
            keyids[ecu["serial"]] = ecu["keyid"]
    assert len(set(keyids.values())) == 4
    ca = one / "ca.pem"
    with serve(home, "--tls") as url:
        own = "/director/VIN0001/metadata/timestamp.json"
        other = "/director/VIN0002/metadata/timestamp.json"
        assert _request(url, own, one, ca) == 200
        assert _request(url, other, one, ca) == 403
        assert _request(url, own, None, ca) == 403  # no certificate
        ok(ota(home, "vehicle", "revoke", "VIN0001"))
        assert _request(url, own, one, ca) == 403
        assert client(one, url, "update").returncode != 0
    assert "already revoked" in ok(ota(home, "vehicle", "revoke", "VIN0001")).stdout


def _forge(home: Path, assignment: Assignment) -> None:
    """Store Director metadata signed with the Director's own keys (a compromised Director),
    labelled as the server's current content so that it serves it as it is."""
    config = load_config(home)
    director = open_home(config, "director", lambda _new: b"")

    async def run() -> None:
        database = await open_database(url_for(config))
        async with database.sessions() as session, session.begin():
            row = await session.get(DirectorMetadata, assignment.vehicle)
            assert row is not None
            previous = SignedVehicle(
                row.version, row.targets, row.snapshot, row.timestamp, row.signed_at, "", -1
            )
            signed = sign_vehicle(
                assignment,
                previous,
                latest_root(director.files),
                RoleSigning(director.keys),
                director.policy,
                datetime.now(UTC),
            )
            row.version = signed.version
            row.targets, row.snapshot, row.timestamp = (
                signed.targets,
                signed.snapshot,
                signed.timestamp,
            )
            row.content = content_digest(Assignment(assignment.vehicle))  # what it "should" be
        await database.dispose()

    asyncio.run(run())


@pytest.mark.parametrize("attack", ["not in the Image repository", "release counter differs"])
def test_the_directors_keys_alone_install_nothing(home: Path, tmp_path: Path, attack: str) -> None:
    car = provision(home, tmp_path)
    image = (EXAMPLES / "images/telematics-2.1.0.bin").read_bytes()
    digest = hashlib.sha256(image).hexdigest()
    target = "tcu-9150/evil.bin" if attack.startswith("not") else "tcu-9150/telematics-2.1.0.bin"
    counter = 2 if attack.startswith("not") else 3
    forged = Assignment(
        "VIN0001",
        (
            EcuAssignment(
                "TCU-1",
                target,
                len(image),
                {"sha256": digest},
                ("tcu-9150",),
                counter,
                Payload(target, len(image), digest, "full"),
            ),
        ),
    )
    with serve(home, "--tls") as url:
        assert client(car, url, "update").returncode == 0  # stores the vehicle's metadata row
        _forge(home, forged)
        result = client(car, url, "update")
        assert result.returncode == 7, result.stderr  # a security failure
        assert attack in result.stderr
        doc = status(car, url)
    assert {e["ecu"]: e["active_slot"] for e in doc["ecus"]} == {"HU-1": "a", "TCU-1": "a"}
    assert doc["security"], "the attack is recorded"
    # Uptane U-92: the next signed version reports carry the attack to the server.
    shown = json.loads(ok(ota(home, "vehicle", "show", "VIN0001", "--json")).stdout)
    assert all(attack in (e["attacks_detected"] or "") for e in shown["ecus"])


def test_assignments_that_cannot_work_are_refused(home: Path, tmp_path: Path) -> None:
    provision(home, tmp_path, "VIN0001", "--ecu", "HU-1:hu-imx8", factory=False)  # no TCU
    for args, message in [
        (("VIN0001", "infotainment@9.9"), "no release infotainment@9.9"),
        (("VIN0001", "infotainment@2.1.0"), "does not fit VIN0001"),
        (("VIN0009", "infotainment@2.1.0"), "no vehicle VIN0009"),
        (("VIN0001", "infotainment"), "BUNDLE@VERSION"),
    ]:
        assert message in one_line_error(ota(home, "assign", *args))
    line = one_line_error(
        ota(home, "vehicle", "provision", "VIN0001", *ECUS, "--out", tmp_path / "x")
    )
    assert "already provisioned" in line and not (tmp_path / "x").exists()
    assert "VIN0001" in ok(ota(home, "vehicle", "list")).stdout


def _plain(url: str, path: str, headers: dict[str, str]) -> int:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("proxies", ['["127.0.0.1"]', '["10.0.0.0/8"]'])
def test_behind_a_proxy_the_identity_header_counts_only_from_the_proxy(
    home: Path, tmp_path: Path, proxies: str
) -> None:
    provision(home, tmp_path, "VIN0001")
    with (home / "config.toml").open("a") as f:
        f.write(f'[serve]\nidentity_header = "X-Client-CN"\ntrusted_proxies = {proxies}\n')
    trusted = "127.0.0.1" in proxies
    path = "/director/VIN0001/metadata/timestamp.json"
    with serve(home) as url:  # plain HTTP on loopback, as behind nginx
        assert _plain(url, path, {"X-Client-CN": "VIN0001"}) == (200 if trusted else 403)
        assert _plain(url, path, {"X-Client-CN": "VIN0002"}) == 403
        assert _plain(url, path, {}) == 403
    (home / "config.toml").write_text('[serve]\nidentity_header = "X"\n')  # no proxies
    assert "go together" in one_line_error(ota(home, "serve", "--insecure-http"))


def _api(
    url: str, method: str, path: str, ca: Path, token: str | None = None, body: Any = None,
    car: Path | None = None,
) -> tuple[int, Any]:  # fmt: skip
    context = ssl.create_default_context(cafile=str(ca))
    if car is not None:
        context.load_cert_chain(car / "vehicle.pem", car / "vehicle.key")
    host, port = url.removeprefix("https://").split("/")[0].split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text
    finally:
        conn.close()


def test_operators_need_a_token_whose_role_allows_the_action(home: Path, tmp_path: Path) -> None:
    car = provision(home, tmp_path, "VIN0001")
    reader = ok(ota(home, "token", "create", "grafana", "--role", "read-only")).stdout.strip()
    made = json.loads(ok(ota(home, "token", "create", "alice", "--role", "fleet-operator",
                             "--json")).stdout)  # fmt: skip
    operator = made["token"]
    listing = ok(ota(home, "token", "list", "--json")).stdout
    assert operator not in listing and reader not in listing
    assert "exists" in one_line_error(ota(home, "token", "create", "alice", "--role", "read-only"))
    ca = car / "ca.pem"
    assignment = "/api/v1/vehicles/VIN0001/assignment"
    with serve(home, "--tls") as url:
        assert _api(url, "GET", "/api/v1/vehicles", ca)[0] == 401
        assert _api(url, "GET", "/api/v1/vehicles", ca, "ota_1_" + "A" * 43)[0] == 401
        status, vehicles = _api(url, "GET", "/api/v1/vehicles", ca, reader)
        assert status == 200 and [v["vin"] for v in vehicles] == ["VIN0001"]
        status, shown = _api(url, "GET", "/api/v1/vehicles/VIN0001", ca, reader)
        assert status == 200 and [e["serial"] for e in shown["ecus"]] == ["HU-1", "TCU-1"]
        release = {"release": "infotainment@2.1.0"}
        assert _api(url, "PUT", assignment, ca, reader, release)[0] == 403
        status, out = _api(url, "PUT", assignment, ca, operator, release)
        assert status == 200 and out["release"] == "infotainment@2.1.0"
        for bad in ({"release": "infotainment@9"}, {"x": 1}, b"{", b"[]"):
            assert _api(url, "PUT", assignment, ca, operator, bad)[0] == 400
        assert _api(url, "DELETE", assignment, ca, operator)[1] == {
            "vin": "VIN0001",
            "unassigned": True,
        }
        # Events: the vehicle posts only its own; reading them needs the vehicle or a token.
        events = "/api/v1/vehicles/VIN0002/events"
        assert _api(url, "GET", events, ca, car=car)[0] == 401
        assert _api(url, "GET", events, ca, reader)[0] == 200
        assert _api(url, "POST", events, ca, body={"x": 1}, car=car)[0] == 403
        ok(ota(home, "token", "revoke", "alice"))
        assert _api(url, "DELETE", assignment, ca, operator)[0] == 401
    assert "no active token" in one_line_error(ota(home, "token", "revoke", "alice"))


def test_a_refused_provisioning_leaves_the_home_as_it_was(home: Path, tmp_path: Path) -> None:
    provision(home, tmp_path, "VIN0001", factory=False)
    shutil.rmtree(home / "state/ca")  # as before the first vehicle: the CA is made on first use
    before = tree(home / "state")
    line = one_line_error(
        ota(home, "vehicle", "provision", "VIN0001", *ECUS, "--out", tmp_path / "again")
    )
    assert "already provisioned" in line
    assert not (home / "state/ca").exists() and not (tmp_path / "again").exists()
    assert {k: v for k, v in tree(home / "state").items() if "fleet.db" not in k} == {
        k: v for k, v in before.items() if "fleet.db" not in k
    }


class AlteringProxy:
    """An HTTP proxy in front of ``ota serve`` that replaces the body of the Director file
    whose name ends with ``name`` (and passes everything else through)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removesuffix("/repo")
        self.name = ""
        self.body = b""
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.log: list[tuple[str, str, int]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        ) as upstream:  # fmt: skip
            data = await upstream.read()
            status = upstream.status
        if self.name and request.path.startswith("/director/") and request.path.endswith(self.name):
            data, status = self.body, 200
        self.log.append((request.method, request.path, status))
        headers = {k: v for k, v in upstream.headers.items() if k.lower() == "etag"}
        return web.Response(body=data if status != 304 else None, status=status, headers=headers)

    def __enter__(self) -> AlteringProxy:
        import threading

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)

        async def start() -> str:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return f"http://127.0.0.1:{runner.addresses[0][1]}"

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self._runner = runner
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_hostile_network_on_the_director_path_installs_nothing(
    home: Path, tmp_path: Path
) -> None:
    """Every Director file the vehicle fetches, altered (truncated, bit-flipped, spliced, hostile
    JSON, endless): one line and exit 4/6/7, the A slots as they were, nothing installed."""
    template = provision(home, tmp_path, "VIN0001")
    ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0"))
    rnd = random.Random(9)
    runner = CliRunner()
    with serve(home) as url, AlteringProxy(url) as proxy:
        car = tmp_path / "probe"
        shutil.copytree(template, car)
        client(car, proxy.url, "check")  # learn the current versions' names
        version = json.loads((car / "data/tuf-director/metadata/timestamp.json").read_bytes())[
            "signed"]["meta"]["snapshot.json"]["version"]  # fmt: skip
        cases = 0
        for name in ("timestamp.json", f"{version}.snapshot.json", f"{version}.targets.json"):
            real = client_bytes(car, name)
            bodies = [*mutate.byte_level(real, rnd, 8), *mutate.json_shapes()]
            bodies.append(("endless", b"x" * (1 << 20)))
            for label, body in bodies:
                proxy.name, proxy.body = name, body
                run = tmp_path / f"run{cases}"
                shutil.copytree(template, run)
                point(run, proxy.url)
                result = runner.invoke(client_main, ["-c", str(run / "client.toml"), "update"])
                cases += 1
                assert result.exit_code in (4, 6, 7), (name, label, result.output)
                if label == "endless":  # U-149, U-153, U-160: refused as an attack
                    assert result.exit_code == 7, (name, result.output)
                assert "Traceback" not in result.output, (name, label)
                errors = result.stderr.strip().splitlines()
                assert len(errors) == 1 and errors[0].startswith("Error: "), (name, label, errors)
                for serial in ("HU-1", "TCU-1"):
                    assert not (run / f"slots/{serial}-b.img").exists(), (name, label)
                shutil.rmtree(run)
        assert cases > 60


def test_an_unchanged_poll_asks_only_the_directors_timestamp(home: Path, tmp_path: Path) -> None:
    """U-132: when the Director has nothing new, the vehicle stops after its timestamp (a 304)
    and asks the Image repository nothing; it still reports what it runs."""
    car = provision(home, tmp_path, "VIN0001")
    ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0"))
    with serve(home) as url, AlteringProxy(url) as proxy:
        assert client(car, proxy.url, "update").returncode == 0
        assert installed(car, proxy.url) == {"HU-1": "2.1.0", "TCU-1": "2.1.0"}
        proxy.log.clear()
        result = client(car, proxy.url, "update")
        assert result.returncode == 0, result.stderr
    asked = [(m, p.rsplit("/", 1)[-1], s) for m, p, s in proxy.log if "/manifest" not in p]
    assert asked == [("GET", "2.root.json", 404), ("GET", "timestamp.json", 304)], asked
    assert sum("/manifest" in p for _m, p, _s in proxy.log) == 2  # start and end of the cycle


def test_the_image_repositorys_online_keys_alone_install_nothing(
    home: Path, tmp_path: Path
) -> None:
    """An attacker with the Image repository's snapshot and timestamp keys (the server's) adds
    an image to a targets version it signs with them, and points snapshot and timestamp at it:
    the vehicle refuses the Image chain and installs nothing, though the Director assigned a
    real release."""
    car = provision(home, tmp_path)
    ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0"))
    image = open_home(load_config(home), "image", lambda _new: b"")
    md_dir = image.files.metadata
    timestamp = Metadata.from_file(str(md_dir / "timestamp.json"))
    snap_version = timestamp.signed.snapshot_meta.version  # type: ignore[attr-defined]
    snapshot = Metadata.from_file(str(md_dir / f"{snap_version}.snapshot.json"))
    targets_version = snapshot.signed.meta["targets.json"].version  # type: ignore[attr-defined]
    targets = Metadata.from_file(str(md_dir / f"{targets_version}.targets.json"))
    evil = b"\x7fELF evil"
    entry = TargetFile.from_data("tcu-9150/telematics-2.1.0.bin", evil, ["sha256"])
    entry.unrecognized_fields["custom"] = {
        "hardware_ids": ["tcu-9150"], "release_counter": 2, "version": "2.1.0",
        "bundle": "infotainment", "ecu": "telematics", "kind": "full",
    }  # fmt: skip
    targets.signed.targets[entry.path] = entry  # type: ignore[attr-defined]
    targets.signed.version += 1
    online = {role: image.keys.signer(role, image.keys.roles()[role].keyids[0])
              for role in ("snapshot", "timestamp")}  # fmt: skip
    targets.signatures.clear()
    targets.sign(online["snapshot"])  # not the targets key, which is offline
    targets_bytes = targets.to_bytes(JSONSerializer(compact=True))
    (md_dir / f"{targets.signed.version}.targets.json").write_bytes(targets_bytes)
    snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)  # type: ignore[attr-defined]
    snapshot.signed.version += 1
    snapshot.signatures.clear()
    snapshot.sign(online["snapshot"])
    snapshot_bytes = snapshot.to_bytes(JSONSerializer(compact=True))
    (md_dir / f"{snapshot.signed.version}.snapshot.json").write_bytes(snapshot_bytes)
    timestamp.signed.snapshot_meta = MetaFile.from_data(  # type: ignore[attr-defined]
        snapshot.signed.version, snapshot_bytes, ["sha256"]
    )
    timestamp.signed.version += 1
    timestamp.signatures.clear()
    timestamp.sign(online["timestamp"])
    (md_dir / "timestamp.json").write_bytes(timestamp.to_bytes(JSONSerializer(compact=True)))
    with serve(home, "--tls") as url:
        result = client(car, url, "update")
        assert result.returncode == 7, result.stderr
        assert "targets" in result.stderr
        doc = status(car, url)
    assert {e["ecu"]: e["active_slot"] for e in doc["ecus"]} == {"HU-1": "a", "TCU-1": "a"}
    assert not (car / "slots/TCU-1-b.img").exists()


def test_the_vehicles_director_files_are_read_with_caps(home: Path, tmp_path: Path) -> None:
    """The Director's root, ECU keys, the manifest counter and the cached ETag, replaced by
    special files (a FIFO would hang a naive read, /dev/zero would eat memory) or junk: one
    line and a non-zero exit for what the vehicle needs, a fresh start for what it keeps."""
    template = provision(home, tmp_path, "VIN0001")
    runner = CliRunner()
    with serve(home) as url:
        point(template, url)
        assert (
            runner.invoke(client_main, ["-c", str(template / "client.toml"), "check"]).exit_code
            == 0
        )
        cases = 0
        for name, needed in [
            ("director-root.json", True),
            ("keys/TCU-1.pem", True),
            ("data/manifest-counter", False),
            ("data/tuf-director/metadata/timestamp.etag", False),
        ]:
            for content in [*SPECIALS, b"", b"junk \\xff" * 9, b"9" * 40]:
                if content is Special.SPARSE and not needed:
                    continue  # regular and large: read up to its cap, then ignored
                car = tmp_path / f"c{cases}"
                shutil.copytree(template, car, symlinks=True)
                place(car / name, content)
                with deadline(60, f"{name} {content!r}"):
                    result = runner.invoke(client_main, ["-c", str(car / "client.toml"), "update"])
                cases += 1
                assert "Traceback" not in result.output, (name, content)
                if needed:
                    assert result.exit_code == 3, (name, content, result.output)
                    assert result.stderr.count("Error:") == 1, (name, content, result.stderr)
                else:
                    assert result.exit_code == 0, (name, content, result.output)
                shutil.rmtree(car)
    assert cases > 30


def test_the_match_goes_through_the_image_repositorys_delegations(tmp_path: Path) -> None:
    """U-168, U-170: a supplier signs the telematics images (a delegated role); the vehicle
    finds the Director's target through the delegation, matches it, and installs it."""
    home = tmp_path / "home"
    ok(ota(home, "keys", "init", "--dev"))
    ok(ota(home, "repo", "init"))
    ok(ota(home, "repo", "delegate", "acme-tcu", "--hardware-id", "tcu-9150"))
    for manifest in ("infotainment-2.0.0.toml", "infotainment-2.1.0.toml"):
        ok(ota(home, "release", "publish", "-q", EXAMPLES / manifest))
    md = home / "repo/metadata"
    supplier = Metadata.from_file(str(sorted(md.glob("*.acme-tcu.json"))[-1])).signed
    assert "tcu-9150/telematics-2.1.0.bin" in supplier.targets  # type: ignore[attr-defined]
    car = provision(home, tmp_path, "VIN0001")
    ok(ota(home, "assign", "VIN0001", "infotainment@2.1.0"))
    with serve(home, "--tls") as url:
        result = client(car, url, "update")
        assert result.returncode == 0, result.stderr
        assert installed(car, url) == {"HU-1": "2.1.0", "TCU-1": "2.1.0"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vin,serial\nV1,S1\n", "header"),
        ("vin,serial,hardware_id\n", "no vehicle"),
        ("vin,serial,hardware_id\n../x,S1,hu-imx8\n", "line 2: vehicle id"),
        ("vin,serial,hardware_id\nV1,S1,hu-imx8\nV2,S1,hu-imx8\n", "serial S1"),
        ("vin,serial,hardware_id\nV1,S1,hu-imx8,primary\nV1,S2,hu,primary\n", "one ECU"),
        ("vin,serial,hardware_id\nV1,S1,hu-imx8,maybe\n", "line 2"),
        ("vin,serial,hardware_id\nV1,S1\n", "line 2"),
        ("vin,serial,hardware_id\nV1,S1,hu\x00x\n", "hardware id"),
        ("vin,serial,hardware_id\nV1,S1," + "h" * 200_000 + "\n", "malformed"),
    ],
)
def test_a_bad_fleet_csv_registers_nothing(
    home: Path, tmp_path: Path, text: str, message: str
) -> None:
    csv = tmp_path / "fleet.csv"
    csv.write_text(text)
    before = ok(ota(home, "vehicle", "list", "--json")).stdout
    line = one_line_error(
        ota(home, "vehicle", "provision", "--from-csv", csv, "--out", tmp_path / "kits")
    )
    assert message in line
    assert not (tmp_path / "kits").exists() and not (home / "state/ca").exists()
    assert ok(ota(home, "vehicle", "list", "--json")).stdout == before


def test_a_fleet_csv_that_is_not_a_file_is_refused(home: Path, tmp_path: Path) -> None:
    for content in (Special.FIFO, Special.DEV_ZERO, Special.DIRECTORY, b"\xff\xfe"):
        csv = tmp_path / "fleet.csv"
        place(csv, content)
        with deadline(30, str(content)):
            line = one_line_error(
                ota(home, "vehicle", "provision", "--from-csv", csv, "--out", tmp_path / "k")
            )
        assert "fleet.csv" in line or "cannot read" in line, (content, line)
