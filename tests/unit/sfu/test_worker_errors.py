"""Command errors: a refusal answers its code; a bug answers internal_error (and is logged), never a
domain code such as participant_not_found."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sfu.routing.room import Room
from sfu.worker import Worker, WorkerConfig


@pytest.fixture
def worker() -> Worker:
    w = Worker(WorkerConfig(), lambda _event: None)
    w.handle("add_participant", {"room_id": "r", "participant_id": "p"})
    return w


def code(w: Worker, cmd: str, args: Any) -> str:
    reply = w.answer(7, cmd, args)
    assert reply["id"] == 7 and reply["ok"] is False
    return str(reply["error"]["code"])


def test_refusals_answer_their_codes(worker: Worker) -> None:
    assert code(worker, "set_muted", {"room_id": "r", "participant_id": "nobody"}) == "participant_not_found"
    assert code(worker, "reset_participant", {"room_id": "r", "participant_id": "nobody"}) == "participant_not_found"
    assert code(worker, "subscribe_answer", {"room_id": "r", "participant_id": "nobody", "sdp": ""}) \
        == "participant_not_found"
    assert code(worker, "subscribe_answer", {"room_id": "r", "participant_id": "p", "sdp": "v=0\r\n"}) \
        == "no_offer_pending"
    assert code(worker, "room_stats", {"room_id": "elsewhere"}) == "room_not_found"
    assert code(worker, "publish_offer", {"room_id": "r", "participant_id": "p", "sdp": "not sdp"}).startswith("sdp_")
    assert code(worker, "reboot", {}) == "unknown_command"


def test_publishing_without_permission_is_not_allowed(worker: Worker) -> None:
    worker.handle("add_participant", {"room_id": "r", "participant_id": "viewer", "can_publish": False})
    assert code(worker, "publish_offer", {"room_id": "r", "participant_id": "viewer", "sdp": "v=0\r\n"}) \
        == "not_allowed"


@pytest.mark.parametrize("args", [
    {"room_id": "r"},                                              # missing
    {"room_id": "r", "participant_id": "p", "colour": "red"},      # unknown
    {"room_id": "r", "participant_id": 5},                         # not a string
    {"room_id": "r", "participant_id": "p", "muted": "yes"},       # not a bool
    ["r", "p"],                                                    # not an object
])
def test_arguments_that_do_not_fit_are_bad_arguments(worker: Worker, args: Any) -> None:
    assert code(worker, "set_muted", args) == "bad_arguments"


@pytest.mark.parametrize("exc", [KeyError("participant"), ValueError("no offer"), TypeError("unexpected")])
def test_a_bug_answers_internal_error_with_its_traceback_logged(
        worker: Worker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, exc: Exception) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(Room, "set_muted", broken)
    with caplog.at_level(logging.ERROR, logger="telesfu.sfu.worker"):
        reply = worker.answer(1, "set_muted", {"room_id": "r", "participant_id": "p"})
    assert reply == {"id": 1, "ok": False, "error": {"code": "internal_error", "message": "internal error"}}
    assert any(r.exc_info and r.exc_info[1] is exc for r in caplog.records)


def test_a_good_command_answers_its_result(worker: Worker) -> None:
    assert worker.answer(2, "set_muted", {"room_id": "r", "participant_id": "p", "muted": True}) == \
        {"id": 2, "ok": True, "result": {"tracks": []}}
