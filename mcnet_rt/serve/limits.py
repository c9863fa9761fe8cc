"""The server's limits on what a caller may send and hold (README: "Security model"), and the one parser of the JSON
callers send (offers, data-channel messages): bounded in size and nesting before `json.loads` sees it, so that a
deep `[[[…` is a clear refusal rather than a RecursionError."""
from __future__ import annotations

import json
import re
from typing import Any

MAX_OFFER_BYTES = 64 * 1024  # an SDP offer with its avatar choice (a browser's is about 4 kB)
MAX_MEDIA_SECTIONS = 4  # m= lines in an offer (the page's has two: its camera and the data channel); aiortc makes
# a transceiver, and without BUNDLE an ICE transport with its own sockets, for each
MAX_MESSAGE_BYTES = 4 * 1024  # one data-channel control message ({"reset": true}, {"smoothing": 0.2})
MAX_JSON_DEPTH = 16  # arrays and objects nested in one another
IDLE_TIMEOUT_S = 10.0  # a session without a camera frame for this long is closed, from its answer on
HEADER_TIMEOUT_S = 10.0  # a connection must send a whole request's headers within this (and may idle this long)
BODY_TIMEOUT_S = 30.0  # a request's body (an avatar upload, an offer) must arrive within this

_SPECIAL = re.compile(r'[\[\]{}"\\]')


def parse_json(data: bytes | str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value in `data`; ValueError naming the problem (too long, too deep, not UTF-8, not JSON)."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ValueError(f"{size} bytes is over the limit of {max_bytes}")
    text = data.decode() if isinstance(data, bytes) else data
    check_depth(text, max_depth)
    return json.loads(text)


def check_depth(text: str, max_depth: int) -> None:
    """ValueError if arrays and objects nest deeper than `max_depth`; one pass over the brackets, quotes and
    backslashes (brackets inside strings do not count), linear whatever the text."""
    depth, in_string, escaped_at = 0, False, -1
    for match in _SPECIAL.finditer(text):
        position, char = match.start(), match.group()
        if position == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
