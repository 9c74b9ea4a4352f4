"""control.jsonparse: hostile JSON is a JsonInputError with a stable reason, never a builtin exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control import jsonparse
from control.jsonparse import MAX_DEPTH, MAX_NUMBER_CHARS, JsonInputError, parse


@pytest.mark.parametrize("text,reason", [
    ("1" * 5000, "json_number_too_long"),  # json.loads: ValueError (int-digit limit)
    ('{"a": -' + "9" * MAX_NUMBER_CHARS + "}", "json_number_too_long"),
    ("[1." + "5" * 200 + "]", "json_number_too_long"),
    ("[" * 100_000, "json_too_deep"),  # json.loads: RecursionError
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "json_too_deep"),
    ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "json_too_deep"),
    ("NaN", "invalid_json"), ('{"x": Infinity}', "invalid_json"), ("[-Infinity]", "invalid_json"),
    ('"\\ud800"', "invalid_json"), ('{"\\udfff": 1}', "invalid_json"),
    ("", "invalid_json"), ("{", "invalid_json"), ("\ufeff{}", "invalid_json"), ("{} x", "invalid_json"),
    (b"\xff\xfe", "invalid_json"), (b"\xed\xa0\x80", "invalid_json"),  # bytes: strict UTF-8
])
def test_hostile_input_has_a_reason(text, reason):
    with pytest.raises(JsonInputError) as e:
        parse(text)
    assert e.value.reason == reason and e.value.message


@pytest.mark.parametrize("text", [
    "[" * MAX_DEPTH + "]" * MAX_DEPTH,  # exactly the limit
    '{"a": ' + "9" * MAX_NUMBER_CHARS + "}",
    '{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',  # brackets in a string do not nest
    '["\\ud83d\\ude00", "\\u00e9", "\\\\ud800"]',  # a surrogate pair, an escape, an escaped backslash
    b'{"type": "join", "token": "abc"}',
])
def test_acceptable_input_parses_as_json_loads_does(text):
    assert parse(text) == json.loads(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30)


@settings(max_examples=300)
@given(json_values)
def test_round_trip_within_bounds(value):
    text = json.dumps(value)
    try:
        got = parse(text)
    except JsonInputError as e:  # only for a reason the value really has
        assert e.reason in ("json_number_too_long", "invalid_json"), e.reason
        return
    assert got == value


@settings(max_examples=500)
@given(st.one_of(st.text(alphabet='[]{}",:0123456789.eE+-\\u tnrfalsNIy'), st.binary()))
def test_arbitrary_input_raises_nothing_else(data):
    try:
        parse(data)
    except JsonInputError:
        pass


def test_the_depth_check_runs_only_for_bracket_heavy_text(monkeypatch):
    calls = []
    real = jsonparse._too_deep
    monkeypatch.setattr(jsonparse, "_too_deep", lambda v, d: calls.append(1) or real(v, d))
    parse('{"type": "publish_offer", "sdp": "' + "a=x\\r\\n" * 1000 + '"}')
    assert calls == []
    parse("[" + ",".join(["[]"] * 40) + "]")
    assert calls == [1]
