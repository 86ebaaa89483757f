"""The vehicle's update machine, its plan, its after-boot decisions and its back-off (pure)."""

from __future__ import annotations

import json
import typing
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota_client.agent import backoff, recovery
from ota_client.agent import machine as m
from ota_client.agent.plan import Candidate, EcuFacts, plan_install
from ota_client.agent.records import (
    EcuRecord,
    Fetch,
    Image,
    Job,
    Phase,
    Retry,
    Step,
    VehicleState,
)
from ota_client.boot.rules import BootFacts
from ota_client.errors import DeviceError
from ota_client.metadata import SourceInfo, TargetCustom
from ota_client.strict import FormatError

A1 = Image("hw-a/a-1.bin", 100, "1" * 64, "1.0", 1)
A2 = Image("hw-a/a-2.bin", 120, "2" * 64, "2.0", 2)
B1 = Image("hw-b/b-1.bin", 50, "3" * 64, "1.0", 1)
B2 = Image("hw-b/b-2.bin", 60, "4" * 64, "2.0", 2)
CYCLE = "c" * 32


def full(image: Image) -> Fetch:
    return m.full_fetch(image)


def job(serial: str, image: Image, slot: str = "b", fetch: Fetch | None = None) -> Job:
    return Job(serial, image, fetch or full(image), full(image), slot, "a" if slot == "b" else "b")


JOBS = (job("A", A2), job("B", B2))
START = VehicleState(
    ecus={"A": EcuRecord(installed=A1, max_counter=1), "B": EcuRecord(installed=B1, max_counter=1)}
)


def run(state: VehicleState, *events: m.Event) -> VehicleState:
    for event in events:
        state = m.step(state, event)
    return state


def planned(state: VehicleState = START) -> VehicleState:
    return run(state, m.Start(), m.Planned(CYCLE, "bundle", "2.0", JOBS, {}))


def armed() -> VehicleState:
    return run(
        planned(),
        m.Downloaded("A"),
        m.Downloaded("B"),
        m.Installed("A"),
        m.Installed("B"),
        m.Armed("A"),
        m.Armed("B"),
    )


def test_every_phase_waits_for_every_ecu() -> None:
    s = run(planned(), m.Downloaded("A"))
    assert s.phase == Phase.DOWNLOAD  # B is still downloading
    s = run(s, m.Downloaded("B"))
    assert s.phase == Phase.INSTALL
    s = run(s, m.Installed("B"))
    assert s.phase == Phase.INSTALL
    s = run(s, m.Installed("A"), m.Armed("A"))
    assert s.phase == Phase.ARM
    s = run(s, m.Armed("B"))
    assert s.phase == Phase.REBOOT


def test_the_bundle_commits_only_when_every_trial_passed() -> None:
    s = run(armed(), m.Booted(10.0), m.TrialPassed(), m.Committed("A"))
    assert s.phase == Phase.COMMIT
    with pytest.raises(m.IllegalTransition, match="not every ECU"):
        m.step(s, m.Done())
    s = run(s, m.Committed("B"), m.Done())
    assert s.phase == Phase.IDLE and not s.jobs
    assert s.record("A").installed == A2 and s.record("B").installed == B2
    assert s.record("A").max_counter == 2 and s.record("B").max_counter == 2


def test_one_failing_trial_rolls_every_ecu_back_and_rejects_the_bundle() -> None:
    s = run(armed(), m.Booted(10.0), m.TrialFailed("B", "exit status 3"))
    assert s.phase == Phase.ROLLBACK and s.outcome == "rollback" and "B: exit" in (s.error or "")
    s = run(s, m.Restored("A"))
    with pytest.raises(m.IllegalTransition, match="not every ECU"):
        m.step(s, m.Done())
    s = run(s, m.Restored("B"), m.Done())
    assert s.phase == Phase.IDLE
    assert s.record("A").installed == A1 and A2.sha256 in s.record("A").rejected
    assert B2.sha256 in s.record("B").rejected
    with pytest.raises(m.IllegalTransition, match="rejected"):
        planned(s)


def test_an_ecu_falling_back_during_commit_rolls_the_bundle_back() -> None:
    s = run(armed(), m.Booted(1.0), m.TrialPassed(), m.Committed("A"))
    s = m.step(s, m.BootedOld("B", "B fell back"))
    assert s.phase == Phase.ROLLBACK and s.job("A").step is Step.COMMITTED


def test_failure_before_the_reboot_cleans_up_and_backs_off() -> None:
    retry = Retry(m.plan_key(JOBS), 1, 500.0)
    s = run(planned(), m.Downloaded("A"), m.Failed("disk full", "device", retry, 100.0))
    assert s.phase == Phase.ROLLBACK and s.outcome == "update_failed" and not s.give_up
    s = run(s, m.Restored("A"), m.Restored("B"), m.Done())
    assert s.phase == Phase.IDLE and s.retry == retry and s.error == "disk full"
    assert not s.record("A").rejected  # not given up: tried again after the back-off
    again = planned(s)
    assert again.retry == retry  # the same release keeps counting attempts


def test_giving_up_rejects_the_release_and_a_security_failure_is_recorded() -> None:
    s = run(planned(), m.Failed("hash mismatch", "security", None, 100.0))
    assert s.give_up and s.security[-1].message == "hash mismatch"
    s = run(s, m.Restored("A"), m.Restored("B"), m.Done())
    assert A2.sha256 in s.record("A").rejected and s.security


def test_delta_that_does_not_fit_falls_back_to_the_full_image() -> None:
    delta = Fetch("hw-a/a-2.bin.from-a-1.bin.delta", 10, "d" * 64, "delta", source_length=100)
    s = run(
        START,
        m.Start(),
        m.Planned(CYCLE, "bundle", "2.0", (job("A", A2, fetch=delta),), {}),
        m.Downloaded("A"),
        m.FallBack("A", "bit rot"),
    )
    assert s.phase == Phase.DOWNLOAD and s.job("A").fetch == full(A2)
    assert s.job("A").step is Step.PENDING


def test_interrupted_download_keeps_its_progress() -> None:
    retry = Retry(m.plan_key(JOBS), 1, 5.0)
    s = run(planned(), m.Progress("A", 64, '"e"'), m.Interrupted("network", retry))
    assert s.phase == Phase.DOWNLOAD and s.job("A").fetch.received == 64
    assert s.interrupted == "network" and s.retry == retry


def test_counter_never_goes_backwards() -> None:
    s = replace(START, phase=Phase.CHECK)
    with pytest.raises(m.IllegalTransition, match="not above"):
        m.step(s, m.Planned(CYCLE, "bundle", "0.9", (job("A", A1),), {}))


EVENTS: list[m.Event] = [
    m.Start(),
    m.Planned(CYCLE, "bundle", "2.0", JOBS, {}),
    m.NothingToDo({"A": A1}),
    m.NothingToDo({}, waiting=True),
    m.Progress("A", 7),
    m.Restart("A", "x"),
    m.Downloaded("A"),
    m.Downloaded("B"),
    m.FallBack("A", "x"),
    m.Installed("A"),
    m.Installed("B"),
    m.Armed("A"),
    m.Armed("B"),
    m.Booted(1.0),
    m.BootedOld("B", "x"),
    m.TrialPassed(),
    m.TrialFailed("A", "x"),
    m.Committed("A"),
    m.Committed("B"),
    m.Restored("A"),
    m.Restored("B"),
    m.Done(),
    m.Failed("x", "device", Retry(m.plan_key(JOBS), 1, 9.0), 1.0),
    m.Failed("x", "security", None, 1.0),
    m.Interrupted("x", Retry(m.plan_key(JOBS), 1, 9.0)),
]


def reachable() -> list[VehicleState]:
    """A state in every phase (and several per phase), reached by legal events."""
    return [
        START,
        replace(START, phase=Phase.CHECK),
        planned(),
        run(planned(), m.Downloaded("A"), m.Downloaded("B")),
        run(planned(), m.Downloaded("A"), m.Downloaded("B"), m.Installed("A"), m.Installed("B")),
        armed(),
        run(armed(), m.Booted(1.0)),
        run(armed(), m.Booted(1.0), m.TrialPassed()),
        run(armed(), m.Booted(1.0), m.TrialFailed("A", "x")),
    ]


def test_the_campaign_sends_every_event_type() -> None:
    assert {type(e) for e in EVENTS} == set(typing.get_args(m.Event))


@pytest.mark.parametrize("state", reachable(), ids=lambda s: str(s.phase))
def test_illegal_events_raise_and_change_nothing(state: VehicleState) -> None:
    before = json.dumps(state.to_json(), sort_keys=True)
    refused = 0
    for event in EVENTS:
        copy = VehicleState.from_json(json.loads(before))
        try:
            m.step(copy, event)
        except m.IllegalTransition:
            refused += 1
        assert json.dumps(copy.to_json(), sort_keys=True) == before  # nothing changed
    assert json.dumps(state.to_json(), sort_keys=True) == before
    allowed = {event for (phase, event) in m.TABLE if phase == state.phase}
    assert refused >= sum(type(e) not in allowed for e in EVENTS)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(EVENTS), max_size=60))
def test_invariants_under_any_event_sequence(events: list[m.Event]) -> None:
    s = START
    for event in events:
        try:
            new = m.step(s, event)
        except m.IllegalTransition:
            continue
        if new.phase == Phase.COMMIT and s.phase != Phase.COMMIT:
            assert s.phase == Phase.TRIAL  # commit only after a trial boot
        if new.phase == Phase.TRIAL:
            assert all(j.step is Step.ARMED for j in new.jobs)  # every ECU armed first
        for serial in ("A", "B"):
            assert new.record(serial).max_counter >= s.record(serial).max_counter
        if new.phase == Phase.IDLE:
            assert not new.jobs and new.cycle is None
            if s.phase == Phase.COMMIT:  # all or none: every ECU moved to the bundle
                assert {new.record(x).installed for x in ("A", "B")} == {A2, B2}
        else:
            assert new.phase == Phase.CHECK or new.jobs
        assert VehicleState.from_json(json.loads(json.dumps(new.to_json()))) == new
        s = new


# -- persisted state: strict --------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(schema=2),
        lambda d: d.update(phase="NAP"),
        lambda d: d["jobs"][0]["fetch"].update(sha256="../../outside/victim"),
        lambda d: d["jobs"][0]["fetch"].update(received=10**9),
        lambda d: d["jobs"][0].update(slot="c"),
        lambda d: d["jobs"][0].update(slot="a"),
        lambda d: d["jobs"][0]["target"].update(path="../x"),
        lambda d: d["jobs"][0]["target"].update(length=float("nan")),
        lambda d: d["jobs"].append(d["jobs"][0]),
        lambda d: d["ecus"]["A"].update(rejected=[1]),
        lambda d: d["ecus"].update({"../x": d["ecus"]["A"]}),
        lambda d: d.update(jobs=[]),
        lambda d: d.update(colour=1),
        lambda d: d.update(cycle="nope"),
    ],
)
def test_class3_state_loader_refuses_damaged_fields(damage) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(json.dumps(planned().to_json()))
    damage(doc)
    with pytest.raises(FormatError):
        VehicleState.from_json(doc)


# -- plan ---------------------------------------------------------------------------------------


def cand(
    image: Image,
    hw: str,
    bundle: str = "bundle",
    kind: str = "full",
    of: Image | None = None,
    source: Image | None = None,
    ecu: str = "e",
) -> Candidate:
    custom = TargetCustom(
        (hw,),
        image.release_counter,
        image.version,
        bundle,
        ecu,
        kind=kind,  # type: ignore[arg-type]
        image=of.path if of else None,
        source=None if source is None else SourceInfo(source.length, {"sha256": source.sha256}),
    )
    return Candidate(image.path, image.length, image.sha256, custom)


def facts(serial: str, hw: str, installed: Image | None, **kw: object) -> EcuFacts:
    base = dict(
        serial=serial,
        hardware_id=hw,
        role=None,
        directory=False,
        booted="a",
        capacity=None,
        installed=installed,
        record=EcuRecord(max_counter=installed.release_counter if installed else 0),
    )
    return EcuFacts(**{**base, **kw})  # type: ignore[arg-type]


DELTA_A = Image("hw-a/a-2.bin.from-a-1.bin.delta", 10, "d" * 64, "2.0", 2)
POOL = [
    cand(A1, "hw-a", ecu="ea"),
    cand(B1, "hw-b", ecu="eb"),
    cand(A2, "hw-a", ecu="ea"),
    cand(B2, "hw-b", ecu="eb"),
    cand(DELTA_A, "hw-a", kind="delta", of=A2, source=A1, ecu="ea"),
    cand(Image("other/x-9.bin", 5, "9" * 64, "9.0", 9), "other", bundle="other"),
]


def test_plan_takes_the_newest_bundle_for_every_ecu_with_a_delta_where_one_fits() -> None:
    plan = plan_install(POOL, [facts("A", "hw-a", A1), facts("B", "hw-b", B1)])
    assert plan is not None and (plan.bundle, plan.version) == ("bundle", "2.0")
    jobs = {j.serial: j for j in plan.jobs}
    assert jobs["A"].fetch.kind == "delta" and jobs["A"].fetch.source_length == A1.length
    assert jobs["B"].fetch == full(B2) and jobs["A"].full == full(A2)
    assert all(j.slot == "b" and j.good == "a" for j in plan.jobs)


def test_plan_writes_the_slot_that_did_not_boot() -> None:
    plan = plan_install(POOL, [facts("A", "hw-a", A1, booted="b"), facts("B", "hw-b", B1)])
    assert plan is not None
    assert {(j.serial, j.slot, j.good) for j in plan.jobs} == {("A", "a", "b"), ("B", "b", "a")}


def test_plan_is_partial_when_an_ecu_runs_its_image_already() -> None:
    plan = plan_install(POOL, [facts("A", "hw-a", A2), facts("B", "hw-b", B1)])
    assert plan is not None and [j.serial for j in plan.jobs] == ["B"]
    assert plan_install(POOL, [facts("A", "hw-a", A2), facts("B", "hw-b", B2)]) is None


def test_a_bundle_that_does_not_fit_the_vehicle_is_skipped() -> None:
    # No ECU for hw-b: the bundle would be half-installed, so it is not installed at all.
    assert plan_install(POOL, [facts("A", "hw-a", A1)]) is None


def test_rejected_or_downgrading_versions_are_skipped_for_older_ones() -> None:
    rejected = facts("A", "hw-a", A1, record=EcuRecord(max_counter=1, rejected=(A2.sha256,)))
    assert plan_install(POOL, [rejected, facts("B", "hw-b", B1)]) is None
    floor = facts("A", "hw-a", None, record=EcuRecord(max_counter=5))
    assert plan_install(POOL, [floor, facts("B", "hw-b", B1)]) is None


def test_plan_refuses_a_slot_too_small() -> None:
    with pytest.raises(DeviceError, match="holds 110 bytes"):
        plan_install(POOL, [facts("A", "hw-a", A1, capacity=110), facts("B", "hw-b", B1)])


def test_directory_slots_take_full_images() -> None:
    plan = plan_install(POOL, [facts("A", "hw-a", A1, directory=True), facts("B", "hw-b", B1)])
    assert plan is not None and plan.jobs[0].fetch.kind == "full"


# -- after boot ---------------------------------------------------------------------------------


def boot(booted: str, active: str = "a", trial: str | None = None, tries: int = 0) -> BootFacts:
    return BootFacts(booted, active, trial, tries)


def test_after_boot_every_ecu_on_its_new_slot_starts_the_trial() -> None:
    s = armed()
    event = recovery.after_boot(s, {"A": boot("b", trial="b", tries=2), "B": boot("b")}, 5.0)
    assert event == m.Booted(5.0)


def test_after_boot_one_ecu_fallen_back_rolls_back() -> None:
    event = recovery.after_boot(armed(), {"A": boot("b"), "B": boot("a")}, 5.0)
    assert isinstance(event, m.BootedOld) and event.serial == "B"


def test_after_a_restart_without_reboot_the_agent_waits_for_the_reboot() -> None:
    facts_ = {"A": boot("a", trial="b", tries=3), "B": boot("a", trial="b", tries=3)}
    assert recovery.after_boot(armed(), facts_, 5.0) is None


def test_trial_deadline_counts_from_the_persisted_start() -> None:
    s = run(armed(), m.Booted(100.0))
    assert recovery.trial_budget(s, 300, 250.0) == 150.0
    assert recovery.trial_budget(s, 300, 50.0) == 300.0  # the clock went backwards
    assert run(s, m.Booted(200.0)).trial_started == 100.0  # a reboot keeps the deadline


def test_preflight_refuses_a_vehicle_off_its_committed_slots() -> None:
    problems, stray = recovery.preflight(
        {"A": boot("b", active="a", trial="b"), "B": boot("a", trial="b", tries=1)}
    )
    assert problems and "A runs slot b" in problems[0]
    assert stray == [("A", "b"), ("B", "b")]


# -- back-off -----------------------------------------------------------------------------------


@given(st.floats(0, 0.999), st.integers(1, 20))
def test_backoff_doubles_with_jitter_then_gives_up(jitter: float, max_attempts: int) -> None:
    retry: Retry | None = None
    delays = []
    for attempt in range(1, max_attempts + 1):
        retry = backoff.next_retry(
            retry, "k", 0.0, first=10, cap=1000, max_attempts=max_attempts, jitter=jitter
        )
        if attempt == max_attempts:
            assert retry is None  # given up
            break
        assert retry is not None and retry.attempts == attempt
        delays.append(retry.not_before)
        assert backoff.waiting(retry, "k", 0.0) and not backoff.waiting(retry, "other", 0.0)
    factor = 0.5 + jitter
    assert delays == [min(1000, 10 * 2 ** (i)) * factor for i in range(len(delays))]
