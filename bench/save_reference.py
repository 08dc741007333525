"""Keeps a finished frontier, grid or bench as a reference result in results/NAME: its JSON,
Markdown and pictures (not its run directories), and reference.json saying how it was made
(the command, the commit, the seeds, the wall time, the machine), so a user's rerun can be
checked against it (`--compare_with=results/NAME/<file>.json`).

python bench/save_reference.py RUN_DIR results/NAME --command="python -m ..." \
    [--commit=abc1234] [--note="..."]
Refuses to replace an existing results/NAME (move it aside first).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

KINDS = {"frontier.json": ("frontier.md", "frontier.png"),
         "grid.json": ("grid.md", "grid.png"),
         "bench.json": ("bench.md",)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("dest")
    parser.add_argument("--command", required=True, help="the command that made run_dir")
    parser.add_argument("--commit", default="", help="default: this checkout's HEAD")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    found = [name for name in KINDS if os.path.isfile(os.path.join(args.run_dir, name))]
    if len(found) != 1:
        sys.exit(f"{args.run_dir}: holds {found or 'none'} of {', '.join(KINDS)}; give a "
                 "finished frontier, grid or bench directory")
    if os.path.exists(args.dest):
        sys.exit(f"{args.dest} exists: move it aside first (references are never replaced)")
    main_file = found[0]
    with open(os.path.join(args.run_dir, main_file), encoding="utf-8") as f:
        result = json.load(f)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    part = args.dest.rstrip("/") + ".part"
    os.makedirs(part)
    for name in (main_file,) + KINDS[main_file] + tuple(
            n for n in sorted(os.listdir(args.run_dir))
            if main_file == "bench.json" and n.startswith("bench_") and n.endswith(".png")):
        if os.path.isfile(os.path.join(args.run_dir, name)):
            shutil.copy2(os.path.join(args.run_dir, name), os.path.join(part, name))
    seeds = result.get("seeds") or sorted({s for b in result.get("datasets", {}).values()
                                           for s in b.get("seeds", [])})
    with open(os.path.join(part, "reference.json"), "w", encoding="utf-8") as f:
        json.dump({"command": args.command, "commit": commit, "seeds": seeds,
                   "wall_seconds": result.get("seconds"), "result": main_file,
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                              f"{platform.system()}, Python {platform.python_version()}",
                   "saved": time.strftime("%Y-%m-%d"), "note": args.note}, f, indent=2)
    os.replace(part, args.dest)
    print(f"-> {args.dest} ({main_file}, seeds {seeds}, commit {commit})")


if __name__ == "__main__":
    main()
