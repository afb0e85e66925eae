#!/usr/bin/env python
"""Print benchmarks/results.json as the Markdown table the README's Development section quotes.

python benchmarks/table.py
"""

from __future__ import annotations

import json

from _common import RESULTS


def main() -> int:
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    print("| script | measures | result | measured (UTC), machine |")
    print("|---|---|---|---|")
    for name, entry in sorted(data.items()):
        when = entry.get("measured_at", "?").replace("T", " ").removesuffix("Z")
        measures = entry.get("measures", "(no `measures` recorded)")
        result = entry.get("result", f"see `{name}` in results.json")
        print(f"| `{name}.py` | {measures} | {result} | {when}, {entry.get('machine', '?')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
