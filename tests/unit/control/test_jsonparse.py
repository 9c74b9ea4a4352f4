"""control.jsonparse: hostile JSON is a JsonInputError with a stable reason, never a builtin exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control import jsonparse
from control.jsonparse import MAX_DEPTH, MAX_NUMBER_CHARS, MAX_VALUES, JsonInputError, parse


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
    # tests/fuzz: 256 KB of [{},{},...] cost 24 ms and 8 MB; refused unparsed now
    ("[" + ",".join(["{}"] * 87_000) + "]", "json_too_many_values"),
    ("[" + ",".join(["0"] * MAX_VALUES) + "]", "json_too_many_values"),
    ("[" + ",".join(['"a"'] * MAX_VALUES) + "]", "json_too_many_values"),
    ('{"s": "' + "\\\"" * 5000 + '", "t": [' + ",".join(["[]"] * MAX_VALUES) + "]}", "json_too_many_values"),
    ("[" * 40 + ",".join(["0"] * MAX_VALUES) + "]" * 40, "json_too_deep"),  # both: depth is the reason given
    ('{"s": "' + "[" * 50 + '", "x": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "json_too_deep"),
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
    "[" + ",".join(["0"] * (MAX_VALUES - 1)) + "]",  # the list and its elements: MAX_VALUES values
    # many , : [ { inside strings, escaped quotes and backslashes: counted outside strings only
    '{"sdp": "' + "a=ssrc:1 cname:{7e2b-[x]},y\\r\\n" * 3000 + '", "r": "\\"{[\\\\", "d": [[[1]]]}',
    '["\\\\", "\\\\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "]",
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


def _depth(v):
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


def _structure(v):
    """The `,` `:` `[` `{` of json.dumps(v) outside its strings, counted from the value."""
    if isinstance(v, list):
        return 1 + max(len(v) - 1, 0) + sum(map(_structure, v))
    if isinstance(v, dict):
        return 1 + 2 * len(v) - (1 if v else 0) + sum(map(_structure, v.values()))
    return 0


tricky_text = st.text(alphabet='"\\[]{},: a\u00e9\U0001f600', max_size=12)
tricky_values = st.recursive(
    st.none() | st.integers(-10**6, 10**6) | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=40)


@settings(max_examples=500)
@given(tricky_values, st.integers(1, 6), st.integers(1, 60))
def test_depth_and_value_limits_are_exact(value, max_depth, max_values):
    # strings full of brackets, quotes and backslashes do not count; small limits make the
    # skeleton path (counts over the limits) run for most examples
    text = json.dumps(value)
    too_many, too_deep = _structure(value) >= max_values, _depth(value) > max_depth
    try:
        got = parse(text, max_depth=max_depth, max_values=max_values)
    except JsonInputError as e:
        expected = {"json_too_many_values", "json_too_deep"} if too_many and too_deep else \
            {"json_too_many_values"} if too_many else {"json_too_deep"} if too_deep else set()
        assert e.reason in expected
        return
    assert not too_many and not too_deep and got == value
