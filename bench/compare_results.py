"""Compares two results (report.json, frontier.json, bench.json) field by field, leaving
out what differs between runs by design (seconds, this_run, config, flags): prints each
differing field and their count; exit status 1 when any differs.

python bench/compare_results.py OLD/report.json NEW/report.json
"""

import json
import sys

SKIP = {"seconds", "this_run", "config", "flags"}


def differences(a, b, path=""):
    """Every (path, a, b) where the two JSON trees differ, SKIP keys left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted((set(a) | set(b)) - SKIP):
            if key not in a or key not in b:
                out.append((f"{path}/{key}", a.get(key, "<missing>"), b.get(key, "<missing>")))
            else:
                out += differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    with open(argv[1]) as f, open(argv[2]) as g:
        found = differences(json.load(f), json.load(g))
    for path, old, new in found:
        print(f"{path}: {old!r} -> {new!r}")
    print(f"{len(found)} differing fields")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
