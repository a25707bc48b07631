"""Instance names (SPEC 2): 5 to 40 characters, a letter first, compared without regard to case."""

from __future__ import annotations

import re

INSTANCE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{4,39}$")
