"""The wire contract, mirrored from src/protocol/messages.ts and limits.ts (the zod schemas there are
the reference; docs/protocol.md describes them). Only what a trainer must check or produce."""
import json
import math
import re

PROTOCOL_VERSION = 2
MAX_FRAME_BYTES = 64 * 1024
TOKEN_ENV = "PLTRAIN_TOKEN"
TOKEN_HEADER = "x-pltrain-token"
LISTENING_PREFIX = "PLTRAIN_LISTENING "
ALPHA_MIN = 0
ALPHA_MAX = 1e6
MAX_UNITS = 64
RUN_FILES = {
    "config": "config.json",
    "runInfo": "run.json",
    "token": "token",
    "metrics": "metrics.jsonl",
    "commands": "commands.jsonl",
    "events": "events.jsonl",
    "log": "trainer.log",
    "socket": "trainer.sock",
}
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_DIRS = [CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"]
CHECKPOINT_MANIFEST = "manifest.json"
UNIT_NAMES = {"moe-mlp": "expert", "switch-transformer": "expert", "bert-encoder": "head", "vgg": "channel group"}
_COMMAND_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class FrameError(Exception):
    pass


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v):
    # JavaScript's Number.isInteger: 2.0 is an integer, true is not a number.
    return _is_number(v) and math.isfinite(v) and float(v).is_integer()


def _fail(path, message):
    raise FrameError(f"invalid frame: {'.'.join(str(p) for p in path) or '(root)'}: {message}")


def _strict(obj, keys, path):
    extra = [k for k in obj if k not in keys]
    if extra:
        _fail(path, "Unrecognized key(s) in object: " + ", ".join(f"'{k}'" for k in extra))


def _alpha_problem(v):
    """Why v is not an acceptable α (limits.ts AlphaSchema), or None."""
    if not _is_number(v):
        return "α must be a number"
    if not math.isfinite(v):
        return "α must be a finite number"
    if v < ALPHA_MIN:
        return f"α must be ≥ {ALPHA_MIN}"
    if v > ALPHA_MAX:
        return "α must be ≤ 1e+6"
    return None


alpha_problem = _alpha_problem


def _steering(c, path):
    if not isinstance(c, dict):
        _fail(path, "Expected object, received " + _js_type(c))
    kind = c.get("kind")
    if kind in ("pause", "resume", "stop"):
        _strict(c, ("kind",), path)
        return {"kind": kind}
    if kind == "setAlpha":
        if "alpha" not in c:
            _fail(path + ["alpha"], "Required")
        bad = _alpha_problem(c["alpha"])
        if bad:
            _fail(path + ["alpha"], bad)
        _strict(c, ("kind", "alpha"), path)
        return {"kind": kind, "alpha": c["alpha"]}
    if kind in ("freeze", "unfreeze"):
        if "unit" not in c:
            _fail(path + ["unit"], "Required")
        u = c["unit"]
        if not _is_number(u):
            _fail(path + ["unit"], "Expected number, received " + _js_type(u))
        if not _is_int(u):
            _fail(path + ["unit"], "a unit is named by its integer index")
        if u < 0:
            _fail(path + ["unit"], "a unit index is ≥ 0")
        if u > MAX_UNITS - 1:
            _fail(path + ["unit"], f"a unit index is < {MAX_UNITS}")
        _strict(c, ("kind", "unit"), path)
        return {"kind": kind, "unit": int(u)}
    _fail(path + ["kind"], "Invalid discriminator value. Expected 'pause' | 'resume' | 'stop' | 'setAlpha' | 'freeze' | 'unfreeze'")


def _js_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _reject_constant(name):
    raise ValueError(name)


def parse_client_frame(raw):
    """Validates one inbound frame as ClientFrameSchema does; returns the frame or raises FrameError."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
    # JavaScript counts UTF-16 code units.
    length = len(text.encode("utf-16-le")) // 2
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        # JSON.parse knows no NaN or Infinity literals.
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise FrameError("frame is not valid JSON")
    if not isinstance(frame, dict):
        _fail([], "Expected object, received " + _js_type(frame))
    kind = frame.get("type")
    if kind == "subscribe":
        if "sinceSeq" not in frame:
            _fail(["sinceSeq"], "Required")
        s = frame["sinceSeq"]
        if not _is_number(s):
            _fail(["sinceSeq"], "Expected number, received " + _js_type(s))
        if not _is_int(s):
            _fail(["sinceSeq"], "Expected integer, received float")
        if s < -1:
            _fail(["sinceSeq"], "Number must be greater than or equal to -1")
        _strict(frame, ("type", "sinceSeq"), [])
        return {"type": "subscribe", "sinceSeq": int(s)}
    if kind == "command":
        if "id" not in frame:
            _fail(["id"], "Required")
        cid = frame["id"]
        if not isinstance(cid, str):
            _fail(["id"], "Expected string, received " + _js_type(cid))
        if len(cid.encode("utf-16-le")) // 2 < 1:
            _fail(["id"], "String must contain at least 1 character(s)")
        if len(cid.encode("utf-16-le")) // 2 > 64:
            _fail(["id"], "String must contain at most 64 character(s)")
        if not _COMMAND_ID.match(cid) or "\n" in cid:
            _fail(["id"], "Invalid")
        if "command" not in frame:
            _fail(["command"], "Required")
        command = _steering(frame["command"], ["command"])
        _strict(frame, ("type", "id", "command"), [])
        return {"type": "command", "id": cid, "command": command}
    _fail(["type"], "Invalid discriminator value. Expected 'subscribe' | 'command'")


# json.dumps with these options builds a new JSONEncoder on every call; one, made once, encodes the same
# text (it keeps no state between calls) ~10 µs sooner per metrics line on a step's cold caches.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value):
    """One JSON line as JSON.stringify writes it (no NaN: a non-finite number is a bug upstream)."""
    return _ENCODER.encode(value)


def dumps_flat_metrics(event):
    """dumps(event) for a metrics line whose other fields are all plain finite numbers (most steps' lines),
    written directly (~10 µs sooner per line on a step's cold caches); None for anything else (units,
    extra, a bool, a non-finite number, another type), which dumps then writes or refuses. The keys are
    the protocol's field names: nothing in them needs escaping."""
    if event.get("type") != "metrics":
        return None
    parts = []
    for k, v in event.items():
        t = type(v)
        if t is float:
            if v - v != 0:  # inf or NaN
                return None
        elif t is not int:
            if k == "type":
                parts.append('"type":"metrics"')
                continue
            return None
        parts.append(f'"{k}":{v!r}')
    return "{" + ",".join(parts) + "}"


def to_precision(x, p):
    """JavaScript's Number.prototype.toPrecision."""
    if x == 0:
        return "0" if p == 1 else "0." + "0" * (p - 1)
    if not math.isfinite(x):
        return str(x)
    # The exponent after rounding to p digits (9.996 → 1.00e+1).
    mant, _, exp = f"{x:.{p - 1}e}".partition("e")
    e = int(exp)
    if e < -6 or e >= p:
        return f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return f"{x:.{max(0, p - 1 - e)}f}"


def to_exponential(x, digits):
    mant, _, exp = f"{x:.{digits}e}".partition("e")
    e = int(exp)
    return f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"


def format_number(x):
    """formatNumber of src/protocol/format.ts."""
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-4:
        return to_exponential(x, 2)
    s = repr(float(to_precision(x, 4)))
    return s[:-2] if s.endswith(".0") else s


def describe_command(c, unit_name):
    k = c["kind"]
    if k == "setAlpha":
        return f"Set α = {format_number(c['alpha'])}"
    if k in ("freeze", "unfreeze"):
        return f"{'Freeze' if k == 'freeze' else 'Unfreeze'} {unit_name} {c['unit']}"
    return k.capitalize()
