"""The update state machine: allowed transitions, illegal ones, and invariants under any events."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota_client.agent import machine as m
from ota_client.agent.select import Candidate, choose
from ota_client.metadata import SourceInfo, TargetCustom

V1 = m.Image("hw/e-1.bin", 100, "1" * 64, "1.0", 1)
V2 = m.Image("hw/e-2.bin", 120, "2" * 64, "2.0", 2)
FULL2 = m.Fetch(V2.path, V2.length, V2.sha256, "full")
DELTA2 = m.Fetch("hw/e-2.bin.from-e-1.bin.delta", 10, "d" * 64, "delta")


def run(state: m.UpdateState, *events: m.Event) -> m.UpdateState:
    for event in events:
        state = m.step(state, event)
    return state


def test_happy_path_commits_and_raises_the_floor() -> None:
    s = run(
        m.UpdateState(installed=V1, max_counter=1),
        m.Start(),
        m.UpdateFound(V2, DELTA2, "b"),
        m.Progress(5, '"etag"'),
        m.Downloaded(),
        m.Installed(),
        m.Armed(),
        m.BootedTrial(10.0),
        m.HealthOk(),
    )
    assert s.state == m.State.COMMIT and s.slot == "b" and s.fetch.received == 5  # type: ignore[union-attr]
    s = m.step(s, m.Reported())
    assert s.state == m.State.IDLE and s.installed == V2 and s.max_counter == 2 and s.target is None


def test_failed_trial_rolls_back_and_never_retries_the_image() -> None:
    s = run(
        m.UpdateState(installed=V1, max_counter=1),
        m.Start(),
        m.UpdateFound(V2, FULL2, "b"),
        m.Downloaded(),
        m.Installed(),
        m.Armed(),
        m.BootedTrial(1.0),
        m.HealthFailed("x"),
    )
    assert s.state == m.State.ROLLBACK and s.error == "x"
    s = m.step(s, m.Reported())
    assert s.state == m.State.IDLE and s.installed == V1 and V2.sha256 in s.rejected
    with pytest.raises(m.IllegalTransition, match="failed a trial"):
        run(s, m.Start(), m.UpdateFound(V2, FULL2, "b"))


def test_bootloader_fallback_is_a_rollback() -> None:
    s = run(
        m.UpdateState(),
        m.Start(),
        m.UpdateFound(V2, FULL2, "b"),
        m.Downloaded(),
        m.Installed(),
        m.Armed(),
        m.BootedOld(),
    )
    assert s.state == m.State.ROLLBACK and "fell back" in (s.error or "")


def test_source_mismatch_falls_back_to_the_full_image() -> None:
    s = run(
        m.UpdateState(),
        m.Start(),
        m.UpdateFound(V2, DELTA2, "b"),
        m.Downloaded(),
        m.SourceMismatch(FULL2, "bit rot"),
    )
    assert s.state == m.State.DOWNLOAD and s.fetch == FULL2


def test_interrupted_download_keeps_its_progress() -> None:
    s = run(
        m.UpdateState(),
        m.Start(),
        m.UpdateFound(V2, FULL2, "b"),
        m.Progress(64, '"e"'),
        m.Interrupted("network"),
    )
    assert s.state == m.State.DOWNLOAD and s.fetch.received == 64 and s.failures == 1  # type: ignore[union-attr]


def test_counter_never_goes_backwards() -> None:
    s = m.UpdateState(installed=V2, max_counter=2, state=m.State.CHECK)
    with pytest.raises(m.IllegalTransition, match="not above"):
        m.step(s, m.UpdateFound(V1, m.Fetch(V1.path, 1, V1.sha256, "full"), "b"))


@pytest.mark.parametrize("state", list(m.State))
def test_illegal_events_raise_and_change_nothing(state: m.State) -> None:
    s = m.UpdateState(state=state, target=V2, fetch=FULL2, slot="b")
    allowed = {event for (source, event) in m.TABLE if source == state}
    for event in (m.Start(), m.Downloaded(), m.Installed(), m.Armed(), m.HealthOk(), m.Reported()):
        if type(event) not in allowed:
            with pytest.raises(m.IllegalTransition):
                m.step(s, event)
    assert s == m.UpdateState(state=state, target=V2, fetch=FULL2, slot="b")


EVENTS = st.sampled_from(
    [
        m.Start(),
        m.UpdateFound(V2, FULL2, "b"),
        m.NoUpdate(),
        m.Progress(7),
        m.Downloaded(),
        m.SourceMismatch(FULL2, "x"),
        m.Installed(),
        m.Armed(),
        m.BootedTrial(1.0),
        m.BootedOld(),
        m.HealthOk(),
        m.HealthFailed("x"),
        m.Reported(),
        m.Failed("x"),
        m.Interrupted("x"),
    ]
)


@settings(max_examples=400)
@given(st.lists(EVENTS, max_size=40))
def test_invariants_under_any_event_sequence(events: list[m.Event]) -> None:
    s = m.UpdateState(installed=V1, max_counter=1)
    committed_via_trial = False
    for event in events:
        try:
            new = m.step(s, event)
        except m.IllegalTransition:
            continue
        if new.state == m.State.COMMIT:
            committed_via_trial = s.state == m.State.TRIAL  # commit only after a trial boot
            assert committed_via_trial
        assert new.max_counter >= s.max_counter
        if new.state == m.State.IDLE:
            assert new.target is None and new.fetch is None and new.slot is None
        else:
            assert new.state == m.State.CHECK or new.target is not None
        assert m.UpdateState.from_json(new.to_json()) == new  # persistable at every step
        s = new


def _cand(
    path: str,
    length: int,
    sha: str,
    counter: int,
    kind: str = "full",
    hw: str = "hw",
    image: str | None = None,
    source: SourceInfo | None = None,
) -> Candidate:
    custom = TargetCustom(
        (hw,),
        counter,
        f"{counter}.0",
        "b",
        "e",
        kind=kind,  # type: ignore[arg-type]
        image=image,
        source=source,
    )
    return Candidate(path, length, sha, custom)


def test_selection_prefers_a_delta_from_exactly_what_is_installed() -> None:
    pool = [
        _cand(V1.path, V1.length, V1.sha256, 1),
        _cand(V2.path, V2.length, V2.sha256, 2),
        _cand(
            "hw/e-2.bin.from-e-1.bin.delta",
            10,
            "d" * 64,
            2,
            "delta",
            image=V2.path,
            source=SourceInfo(V1.length, {"sha256": V1.sha256}),
        ),
        _cand("other/x-9.bin", 5, "9" * 64, 9, hw="other"),
    ]
    choice = choose(pool, "hw", V1, 1)
    assert choice is not None and choice.target == V2 and choice.fetch.kind == "delta"
    assert choice.full.path == V2.path
    unknown = choose(pool, "hw", None, 0)
    assert unknown is not None and unknown.fetch.kind == "full"  # no delta without a known source
    assert choose(pool, "hw", V2, 2) is None  # up to date
    assert choose(pool, "hw", V1, 1, rejected=[V2.sha256]) is None  # failed before: skipped
    assert choose(pool, "nothing", None, 0) is None  # another hardware id's images never apply
    stale = replace(V1, sha256="f" * 64)
    c = choose(pool, "hw", stale, 1)
    assert c is not None and c.fetch.kind == "full"  # installed image differs: full image
