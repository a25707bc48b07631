"""Text that came from elsewhere (a child's report, a parent's message) made safe for a terminal: without control
characters an escape sequence cannot retitle the terminal, move the cursor or draw a line that is not there."""

from __future__ import annotations

import re

# C0, DEL and C1: ESC and CSI start terminal escape sequences; CR, LF and BS redraw what was printed.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(value):
    """`value` (text, or a JSON document) with every control character removed from its strings and keys."""
    if isinstance(value, str):
        return CONTROL_CHARACTERS.sub("", value)
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value
