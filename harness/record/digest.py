"""The one way the harness names a thing by its content: sha256 of its canonical JSON (sorted keys,
values JSON cannot hold written as str). Run ids, cache keys and the code identity all use it, so
equal content always gets the same name."""
from __future__ import annotations

import hashlib
import json


def json_digest(obj, length: int | None = None) -> str:
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length] if length else digest
