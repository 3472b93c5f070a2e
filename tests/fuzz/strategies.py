"""Hypothesis strategies for the bytes of a request to any RPC, built from its descriptor.

Three shapes of request, mixed:

- a valid message of the request type whose fields hold random values: odd
  unicode, huge strings, negative and extreme numbers, NaN, unknown enum
  values, nested messages (timestamps out of range) — and, for string fields,
  often a value from ``pool`` (ids that exist in the daemon), so a fuzzed
  request gets past "not found" into the code behind it;
- such a message serialized and then byte-mutated (flipped, inserted,
  deleted bytes, truncation): invalid UTF-8, broken lengths, wrong wire types;
- random bytes, parsed by the daemon as the request type;
- given templates (requests known to work), a template with a field or two
  changed, and that mutated: these get past validation into what is behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st

FD = descriptor.FieldDescriptor

_MAX_DEPTH = 3
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_RANGES = {
    FD.TYPE_INT32: _INT32,
    FD.TYPE_SINT32: _INT32,
    FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_INT64: _INT64,
    FD.TYPE_SINT64: _INT64,
    FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT32: _UINT32,
    FD.TYPE_FIXED32: _UINT32,
    FD.TYPE_UINT64: _UINT64,
    FD.TYPE_FIXED64: _UINT64,
}
# Strings that tend to break parsers, paths, URLs, regexes and SQL.
_NASTY = [
    "",
    " ",
    "\x00",
    "\t\r\n",
    "../../etc/passwd",
    "%00",
    "' OR 1=1 --",
    '"; DROP TABLE runs; --',
    "https://[::1/",
    "http://127.0.0.1:99999/",
    "https://169.254.169.254/latest/meta-data/",
    "\u202e\u200b\ufeff",
    "\U0001f600" * 40,
    "é" * 65,
    "a" * 129,
    "9" * 40,
    "-1",
    "NaN",
    "projects/p/locations/l/reasoningEngines/1",
]


def _urls() -> st.SearchStrategy[str]:
    """URLs, mostly broken: odd schemes, hosts (IPv6 unclosed, private, scoped), ports."""
    return st.builds(
        "{}://{}{}{}{}".format,
        st.sampled_from(["https", "http", "HTTPS", "ftp", "file", "", "javascript"]),
        st.sampled_from(["", "user:pass@", "@", "a@b@"]),
        st.sampled_from(
            [
                "mcp.example.com",
                "[::1",
                "[::1]",
                "::1",
                "127.0.0.1",
                "10.0.0.1",
                "0",
                "169.254.169.254",
                "localhost",
                "",
                "ex ample.com",
                "[fe80::1%25eth0]",
                "[::ffff:127.0.0.1]",
                "xn--",
                "a" * 300,
                "2130706433",
                "0x7f.1",
                "[",
                "]",
            ]
        ),
        st.sampled_from(["", ":99999", ":abc", ":-1", ":0", ":443", ":", ":65536"]),
        st.sampled_from(["", "/", "/mcp", "/../etc/passwd", "/mcp?x=1#f", "/%00", "\\x"]),
    )


#: Field names whose values follow a grammar: a dictionary of tricky values for each.
_BY_NAME: dict[str, st.SearchStrategy[str]] = {"url": _urls()}


def _text() -> st.SearchStrategy[str]:
    # codec="utf-8": every string protobuf can carry (no lone surrogates).
    chars = st.characters(codec="utf-8")
    return st.one_of(
        st.text(chars, max_size=24),
        st.text(st.characters(codec="ascii"), max_size=80),
        st.sampled_from(_NASTY),
        # Huge: past every length limit the daemon has.
        st.tuples(st.sampled_from(["x", "é", "\U0001f600", "\x00"]), st.integers(1, 100_000)).map(
            lambda piece_count: piece_count[0] * piece_count[1]
        ),
    )


def _scalar(field: descriptor.FieldDescriptor, pool: Sequence[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FD.TYPE_STRING:
        shapes = [_text()]
        if pool:
            shapes.append(st.sampled_from(list(pool)))
        if field.name in _BY_NAME:
            shapes += [_BY_NAME[field.name]] * 4
        return st.one_of(shapes)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == FD.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # Open enums: unknown numbers reach the daemon as they are.
        return st.one_of(st.sampled_from(known), st.integers(*_INT32))
    lo, hi = _RANGES[t]
    return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1, -1 if lo < 0 else 2]))


def messages(
    desc: descriptor.Descriptor, pool: Sequence[str] = (), depth: int = 0
) -> st.SearchStrategy[message.Message]:
    """Messages of type ``desc`` with a random subset of fields set to random values."""
    cls = message_factory.GetMessageClass(desc)
    if depth >= _MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        optional[field.name] = _field(field, pool, depth)

    def build(values: dict[str, Any]) -> message.Message:
        out = cls()
        for name, value in values.items():
            _assign(out, desc.fields_by_name[name], value)
        return out

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _field(
    field: descriptor.FieldDescriptor, pool: Sequence[str], depth: int
) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = field.message_type.fields_by_name["key"]
        value = field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalar(key, pool), _single(value, pool, depth + 1), max_size=20)
    one = _single(field, pool, depth)
    if field.is_repeated:
        if field.type != FD.TYPE_STRING:
            return st.lists(one, max_size=4)
        return st.one_of(
            st.lists(one, max_size=4),
            # Past the count limits (tools): many short strings.
            st.lists(st.text(max_size=4), min_size=120, max_size=140),
        )
    return one


def _single(
    field: descriptor.FieldDescriptor, pool: Sequence[str], depth: int
) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        return messages(field.message_type, pool, depth + 1)
    return _scalar(field, pool)


def _assign(out: message.Message, field: descriptor.FieldDescriptor, value: Any) -> None:
    target = getattr(out, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        message_values = field.message_type.fields_by_name["value"].type == FD.TYPE_MESSAGE
        for k, v in value.items():
            if message_values:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        target.extend(value)
    elif field.type == FD.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(out, field.name, value)


@st.composite
def _mutated(draw: st.DrawFn, valid: st.SearchStrategy[message.Message]) -> bytes:
    data = bytearray(draw(valid).SerializeToString())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert" or not data:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "flip":
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[min(pos, len(data) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xFF]))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def tweaked(
    draw: st.DrawFn, template: message.Message, pool: Sequence[str] = (), depth: int = 0
) -> message.Message:
    """``template`` (a request that works) with one or two of its fields, at any depth,
    given a random value: mostly valid requests reach the code behind validation."""
    out = type(template)()
    out.CopyFrom(template)
    desc = out.DESCRIPTOR
    if not desc.fields:
        return out
    for _ in range(draw(st.integers(1, 2))):
        # Fields with a grammar (a URL) are where parsers break: pick them more often.
        fields = list(desc.fields) + [f for f in desc.fields if f.name in _BY_NAME] * 3
        field = draw(st.sampled_from(fields))
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if (
            field.type == FD.TYPE_MESSAGE
            and not field.is_repeated
            and depth < _MAX_DEPTH
            and draw(st.booleans())
        ):
            inner = draw(tweaked(getattr(out, field.name), pool, depth + 1))
            getattr(out, field.name).CopyFrom(inner)
            continue
        out.ClearField(field.name)
        if field.is_repeated or is_map or field.type == FD.TYPE_MESSAGE:
            _assign(out, field, draw(_field(field, pool, depth)))
        else:
            _assign(out, field, draw(_scalar(field, pool)))
    return out


def request_bytes(
    request: type[message.Message],
    pool: Sequence[str] = (),
    templates: Sequence[message.Message] = (),
) -> st.SearchStrategy[bytes]:
    """The bytes of a request to an RPC taking ``request``: valid, mutated or random;
    with ``templates`` (requests that work), also those with a field or two changed."""
    valid = messages(request.DESCRIPTOR, pool)
    if not templates:
        return st.one_of(
            valid.map(lambda m: m.SerializeToString()), _mutated(valid), st.binary(max_size=256)
        )
    near = st.sampled_from(list(templates)).flatmap(lambda t: tweaked(t, pool))
    # Mostly near-valid: garbage bytes all end in the same parse error, random messages
    # mostly in the first field check; a working request with one field changed goes deep.
    shapes = [
        *[near.map(lambda m: m.SerializeToString())] * 5,
        valid.map(lambda m: m.SerializeToString()),
        _mutated(st.one_of(near, valid)),
        st.binary(max_size=256),
    ]
    return st.one_of(shapes)
