"""Where a program's wall time goes, by stage and by kind of work: runs the command given
after `--` (or reads a log it wrote), and splits its time from its own log lines: the
engine's "stage NAME ..." / "stage NAME done in T s" and the training loop's "NAME: finished
at step N in T s (build and restore a s, ...)".

python bench/profile_run.py --out=DIR -- python -m badhash_tf.frontier --preset=demo ...
python bench/profile_run.py --out=DIR --log=run.log     (a log already written)
Writes DIR/profile.json and DIR/profile.md. Kinds: process start (launch to the first stage:
imports, flag checks, loading and checking data; with --log, from the first line), each
stage's loop parts (build and restore, input and tracing setup, first call with tracing,
training, evaluations, checkpoints, summaries), the stage's time outside its loops
(encoding and scoring, poisoning, records), and the end (after the last stage: reports,
pictures, exports). Each defense of a bench or `defend` run is a stage
("defenses/<attack>/<defense>"); the stages are also summed by kind across attacks.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("out", None, "Directory for profile.json and profile.md.")
flags.DEFINE_string("log", None, "Profile this log (a program's stderr) instead of running.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS

PREFIX = re.compile(r"^[IWEF](\d{4}) (\d{2}:\d{2}:\d{2}\.\d{6}) +\d+ \S+\] (.*)$")
STAGE_START = re.compile(r"^stage (\S+) \.\.\.$")
STAGE_DONE = re.compile(r"^stage (\S+) done in ([\d.]+) s$")
LOOP_DONE = re.compile(r"^(\S+): finished at step \d+ in ([\d.]+) s \((.*)\)")
PART = re.compile(r"^(.+) ([\d.]+) s$")
START, OUTSIDE, END = "process start", "outside the loops", "end"


def _time(stamp_day, stamp_time, year):
    return datetime.datetime.strptime(f"{year}{stamp_day} {stamp_time}",
                                      "%Y%m%d %H:%M:%S.%f").timestamp()


def profile(lines, launched=None, ended=None, year=None):
    """A program's log lines -> {"stages": {name: {"seconds", "loops": {part: s},
    OUTSIDE: s}}, "kinds": {kind: s}, "wall": s}. `launched`/`ended`: the process's start
    and end (epoch seconds), when known; otherwise its first and last log lines."""
    year = year or datetime.date.today().year
    stages, open_stages, stamps = {}, [], []
    for line in lines:
        match = PREFIX.match(line.rstrip("\n"))
        if not match:
            continue
        at = _time(match.group(1), match.group(2), year)
        stamps.append(at)
        message = match.group(3)
        if m := STAGE_START.match(message):
            open_stages.append(m.group(1))
            stages.setdefault(m.group(1), {"seconds": 0.0, "loops": {}, "first": at})
        elif m := STAGE_DONE.match(message):
            stages[m.group(1)]["seconds"] += float(m.group(2))
            stages[m.group(1)]["last"] = at
            if m.group(1) in open_stages:
                open_stages.remove(m.group(1))
        elif m := LOOP_DONE.match(message):
            owner = open_stages[-1] if open_stages else "(outside any stage)"
            record = stages.setdefault(owner, {"seconds": 0.0, "loops": {}, "first": at,
                                               "last": at})
            for part in m.group(3).split(", "):
                if p := PART.match(part):
                    record["loops"][p.group(1)] = record["loops"].get(p.group(1), 0.0) + float(
                        p.group(2))
            if owner == "(outside any stage)":
                record["seconds"] += float(m.group(2))
    if not stamps:
        raise ValueError("no log lines with absl's prefix (run the program with its default "
                         "--verbosity, stderr captured)")
    launched = launched if launched is not None else stamps[0]
    ended = ended if ended is not None else stamps[-1]
    firsts = [s["first"] for s in stages.values()] or [ended]
    lasts = [s.get("last", s["first"]) for s in stages.values()] or [launched]
    kinds = {START: max(0.0, min(firsts) - launched)}
    for record in stages.values():
        loops = sum(record["loops"].values())
        record[OUTSIDE] = round(max(0.0, record["seconds"] - loops), 2)
        for part, seconds in record["loops"].items():
            kinds[part] = kinds.get(part, 0.0) + seconds
        kinds[OUTSIDE] = kinds.get(OUTSIDE, 0.0) + record[OUTSIDE]
        record.pop("first"), record.pop("last", None)
    kinds[END] = max(0.0, ended - max(lasts))
    return {"wall": round(ended - launched, 2), "stages": stages,
            "kinds": {k: round(v, 2) for k, v in kinds.items()}}


def group(name):
    """A stage's kind across attacks: "badhash/trigger" -> "trigger",
    "defenses/badhash/spectral" -> "defense spectral", "surrogate" -> "surrogate"."""
    parts = name.split("/")
    if parts[0] == "defenses" and len(parts) == 3:
        return f"defense {parts[2]}"
    return parts[-1]


def groups(result):
    """{kind of stage: (seconds, count)}, largest first: where a bench's time goes."""
    summed = {}
    for name, record in result["stages"].items():
        seconds, count = summed.get(group(name), (0.0, 0))
        summed[group(name)] = (seconds + record["seconds"], count + 1)
    return dict(sorted(summed.items(), key=lambda kv: -kv[1][0]))


def markdown(result, command):
    wall = result["wall"] or 1.0
    rows = [f"# Profile\n\n`{command}`: {result['wall']:.1f} s\n",
            "| kind of work | seconds | share |", "|---|---:|---:|"]
    rows += [f"| {k} | {v:.1f} | {100 * v / wall:.0f}% |"
             for k, v in sorted(result["kinds"].items(), key=lambda kv: -kv[1])]
    rows += ["", "| kind of stage | seconds | share | stages |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {s:.1f} | {100 * s / wall:.0f}% | {n} |"
             for k, (s, n) in groups(result).items()]
    rows += ["", "| stage | seconds | in its loops | outside |", "|---|---:|---:|---:|"]
    rows += [f"| {name} | {s['seconds']:.1f} | {sum(s['loops'].values()):.1f} | "
             f"{s[OUTSIDE]:.1f} |" for name, s in result["stages"].items()]
    return "\n".join(rows) + "\n"


def main(argv):
    command = argv[1:]
    if FLAGS.log:
        with open(FLAGS.log, encoding="utf-8") as f:
            lines, launched, ended, command = f.readlines(), None, None, [f"(log {FLAGS.log})"]
    else:
        if not command:
            raise app.UsageError("give the command to profile after `--`, or --log=FILE")
        launched = time.time()
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
        ended = time.time()
        lines = done.stderr.splitlines()
        if done.returncode:
            sys.stderr.write("\n".join(lines[-20:]) + "\n")
            raise SystemExit(f"the profiled command exited with status {done.returncode}")
    result = profile(lines, launched, ended)
    result["command"] = " ".join(command)
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "profile.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(FLAGS.out, "profile.md"), "w", encoding="utf-8") as f:
        f.write(markdown(result, result["command"]))
    print(markdown(result, result["command"]))


if __name__ == "__main__":
    app.run(main)
