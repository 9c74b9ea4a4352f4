"""Typed errors of the media worker's commands: each carries the `code` the node is answered with.

They are raised where the condition is detected (a room that is not here, a participant
that is not in the room, an answer with no offer out) and caught only at the command
boundary. Anything else that escapes a command is a bug: the worker logs its traceback
and answers `internal_error`, so a `KeyError` from a bug never reads as "not found".
"""

from __future__ import annotations


class SfuError(Exception):
    """A refused command. `code` is stable (the node and its clients switch on it)."""

    code = "sfu_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class UnknownCommand(SfuError):
    code = "unknown_command"


class BadArguments(SfuError):
    code = "bad_arguments"


class RoomNotFound(SfuError):
    code = "room_not_found"


class ParticipantNotFound(SfuError):
    code = "participant_not_found"


class NotAllowed(SfuError):
    code = "not_allowed"


class NoOfferPending(SfuError):
    code = "no_offer_pending"
