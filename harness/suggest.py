"""'Did you mean ...?' for a misspelt name, from the names that would be valid."""
from __future__ import annotations

import difflib


def did_you_mean(name: str, valid, prefix: str = "") -> str:
    """' (did you mean x or y?)' for the valid names closest to `name`, each shown after `prefix`."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""
