"""Inbound frames are judged as the zod schemas judge them (src/protocol/messages.ts), and numbers are
written as JavaScript writes them."""
import json

import pytest

from pltrain.protocol import MAX_FRAME_BYTES, FrameError, describe_command, format_number, parse_client_frame, to_exponential, to_precision


@pytest.mark.parametrize("frame", [
    {"type": "subscribe", "sinceSeq": -1},
    {"type": "subscribe", "sinceSeq": 12},
    {"type": "command", "id": "a-1_B", "command": {"kind": "pause"}},
    {"type": "command", "id": "x", "command": {"kind": "setAlpha", "alpha": 0}},
    {"type": "command", "id": "x", "command": {"kind": "setAlpha", "alpha": 1e6}},
    {"type": "command", "id": "x", "command": {"kind": "freeze", "unit": 63}},
    {"type": "command", "id": "x" * 64, "command": {"kind": "unfreeze", "unit": 2.0}},
])
def test_valid_frames_pass(frame):
    assert parse_client_frame(json.dumps(frame))["type"] == frame["type"]


@pytest.mark.parametrize("text, message", [
    ("{not json", "frame is not valid JSON"),
    ('{"type": "subscribe", "sinceSeq": NaN}', "frame is not valid JSON"),
    ("[]", "invalid frame: (root): Expected object, received array"),
    ('{"type": "launchMissiles"}', "invalid frame: type: Invalid discriminator value"),
    ('{"type": "subscribe", "sinceSeq": -2}', "invalid frame: sinceSeq:"),
    ('{"type": "subscribe", "sinceSeq": 1.5}', "invalid frame: sinceSeq:"),
    ('{"type": "subscribe", "sinceSeq": true}', "invalid frame: sinceSeq: Expected number, received boolean"),
    ('{"type": "subscribe", "sinceSeq": 1, "x": 1}', "Unrecognized key(s) in object: 'x'"),
    ('{"type": "command", "id": "a", "command": {"kind": "setAlpha", "alpha": -1}}', "invalid frame: command.alpha: α must be ≥ 0"),
    ('{"type": "command", "id": "a", "command": {"kind": "setAlpha", "alpha": 1e400}}', "invalid frame: command.alpha: α must be a finite number"),
    ('{"type": "command", "id": "a", "command": {"kind": "setAlpha"}}', "invalid frame: command.alpha: Required"),
    ('{"type": "command", "id": "a", "command": {"kind": "freeze", "unit": 64}}', "invalid frame: command.unit: a unit index is < 64"),
    ('{"type": "command", "id": "a", "command": {"kind": "freeze", "unit": 0.5}}', "command.unit: a unit is named by its integer index"),
    ('{"type": "command", "id": "a b", "command": {"kind": "stop"}}', "invalid frame: id: Invalid"),
    ('{"type": "command", "id": "", "command": {"kind": "stop"}}', "invalid frame: id: String must contain at least 1"),
    ('{"type": "command", "id": "a", "command": {"kind": "stop", "now": true}}', "Unrecognized key(s)"),
    ('{"type": "command", "id": "a", "command": {"kind": "exec"}}', "invalid frame: command.kind: Invalid discriminator value"),
])
def test_invalid_frames_are_refused_with_a_reason(text, message):
    with pytest.raises(FrameError) as e:
        parse_client_frame(text)
    assert message in str(e.value)


def test_oversized_frame():
    with pytest.raises(FrameError, match=f"exceeds {MAX_FRAME_BYTES}"):
        parse_client_frame('"' + "x" * MAX_FRAME_BYTES + '"')


def test_numbers_as_javascript_writes_them():
    assert to_precision(50, 3) == "50.0"
    assert to_precision(1 / 6, 3) == "0.167"
    assert to_precision(9.996, 3) == "10.0"
    assert to_precision(1234567, 3) == "1.23e+6"
    assert to_precision(1e-7, 3) == "1.00e-7"
    assert to_precision(0.000123456, 3) == "0.000123"
    assert to_exponential(12345.0, 2) == "1.23e+4"
    assert format_number(0.5) == "0.5" and format_number(1e6) == "1.00e+6" and format_number(0.12345) == "0.1235"
    assert describe_command({"kind": "setAlpha", "alpha": 0.5}, "expert") == "Set α = 0.5"
    assert describe_command({"kind": "freeze", "unit": 2}, "head") == "Freeze head 2"


def test_dumps_writes_what_json_dumps_writes_and_refuses_nan():
    """dumps (one encoder made once) against json.dumps with the same options, call by call."""
    from pltrain.protocol import dumps

    values = [{"type": "metrics", "step": 3, "loss": 0.1 + 0.2, "x": [1e-300, 1e300, -0.0, 5, True, None]},
              {"message": "κ ≥ 1/δ — “quoted” \u2028 \n\t\\", "nested": {"a": [{"b": "é"}]}}, [], "", 0]
    for v in values:
        assert dumps(v) == json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for bad in (float("nan"), float("inf"), {"loss": float("-inf")}):
        with pytest.raises(ValueError):
            dumps(bad)


def test_a_flat_metrics_line_is_written_as_dumps_writes_it_and_anything_else_is_left_to_dumps():
    """dumps_flat_metrics: the same text as dumps for a metrics line of plain finite numbers (floats of
    every magnitude, −0.0, the smallest subnormal, large ints), None where dumps must decide (a list, a
    dict, a bool, None, a str, a non-finite number, a float or int subclass, another event type)."""
    import random

    import numpy as np

    from pltrain.protocol import dumps, dumps_flat_metrics

    rng = random.Random(7)
    specials = [0.0, -0.0, 5e-324, 1e-7, 1e-5, 0.1 + 0.2, 1e16, 1.7976931348623157e308, 2 ** 53 + 1, -(10 ** 20), 0, 1]
    for _ in range(500):
        line = {"type": "metrics", "step": rng.randrange(10 ** 6), "time": 1765057000000 + rng.randrange(10 ** 9)}
        for key in ("loss", "taskLoss", "regularizer", "alpha", "taskMetric", "stepsPerSec", "plRatio", "participation", "seq"):
            line[key] = rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
        assert dumps_flat_metrics(line) == dumps(line)
    base = {"type": "metrics", "step": 1, "loss": 0.5}
    for extra in ({"units": []}, {"extra": {"load/0": 0.5}}, {"alpha": True}, {"plRatio": None}, {"note": "x"},
                  {"loss": float("nan")}, {"loss": float("inf")}, {"loss": -float("inf")}, {"loss": np.float64(0.5)}, {"step": np.int64(1)}):
        assert dumps_flat_metrics({**base, **extra}) is None, extra
    assert dumps_flat_metrics({"type": "log", "level": "info", "message": "m"}) is None
    assert dumps_flat_metrics({"step": 2, "type": "metrics", "loss": 0.25}) == '{"step":2,"type":"metrics","loss":0.25}', "the dict's order"
    assert dumps_flat_metrics({**base, "seq": 4}) == dumps({**base, "seq": 4}) == '{"type":"metrics","step":1,"loss":0.5,"seq":4}'
