"""Error types whose messages are shown to users as they are (no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: a config, a flag, a data folder. CLIs exit with code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A data folder is missing, empty or malformed."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates nearest to `name`, best first (for 'did you mean' hints)."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        # Match on the last dotted part too: `optimizer.lrr` -> `optimizer.lr`.
        leaf = name.rsplit(".", 1)[-1]
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        found = [leaves[x] for x in difflib.get_close_matches(leaf, list(leaves), n=n, cutoff=0.6)]
    return found


def unknown_key_message(key: str, candidates: Iterable[str], where: str = "") -> str:
    """'Unknown key X in Y. Did you mean: a, b?' with the nearest existing keys."""
    near = closest(key, candidates)
    msg = f"unknown key '{key}'" + (f" in {where}" if where else "")
    if near:
        msg += f". Did you mean: {', '.join(near)}?"
    return msg
