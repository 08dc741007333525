"""The speed issue's side by side: the digits bench (one seed, every attack and defense main
had) and one demo frontier cell (BadHash at 25 dB, one seed), run by an older commit (main
at 2e138bf, before the experiment engine) and by this tree, one after the other on the same
machine: each wall time, the ratio, and whether the figures are equal.

python bench/speed_vs_base.py --out=DIR                    (both; about an hour on 2 cores)
python bench/speed_vs_base.py --out=DIR --what=frontier --base=2e138bf
python bench/speed_vs_base.py --out=DIR --what=bench --extra=--train_steps=4 --extra=--defenses=jpeg
Extracts the base commit with `git archive` into DIR/base_tree and runs each command from
that tree and from this one, in this Python (the same venv), into new directories: each
program makes every stage it needs. This tree runs with per-channel triggers and without
the clean control (the base had neither), so both compute the same cells. The frontier
needs the demo's public backbone (`make pretrained`, in runs/pretrain/fashion). Writes
DIR/speed.json and DIR/speed.md; rerun with another DIR for another draw (nothing is reused).
"""

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONE = os.path.join("runs", "pretrain", "fashion")
BASE_ATTACKS = ("badhash", "badhash_anchor", "ciba_tri", "ciba_tri_noise", "ciba_tri_adv",
                "ciba", "patch", "sig", "narcissus", "darkhash")
FRONTIER = ["--psnr_budgets=25", "--methods=badhash"]
COMMANDS = {  # (what) -> (base's arguments, this tree's arguments, the result file)
    "bench": (["badhash_tf.bench", "--flagfile=flags/digits.cfg"],
              ["badhash_tf.bench", "--preset=digits", "--trigger_colour=colour",
               "--attacks=" + ",".join(BASE_ATTACKS)], "bench.json"),
    "frontier": (["badhash_tf.frontier", "--flagfile=flags/demo.cfg"] + FRONTIER,
                 ["badhash_tf.frontier", "--preset=demo", "--trigger_colour=colour"] + FRONTIER,
                 "frontier.json")}
SKIP = {"seconds", "this_run", "config", "flags", "run_dir", "backbone"}

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined when run, so tests can import this file)."""
    flags.DEFINE_string("out", None, "A new directory for the runs, speed.json and speed.md.")
    flags.DEFINE_string("base", "2e138bf", "The commit to compare with.")
    flags.DEFINE_list("what", ["bench", "frontier"], "What to time: bench, frontier.")
    flags.DEFINE_integer("seed", 0, "The seed of both runs.")
    flags.DEFINE_multi_string("extra", [], "A flag added to every command of both trees, "
                              "repeatable (a tiny trial: --extra=--train_steps=4).")
    flags.mark_flag_as_required("out")


def leaves(tree, path=""):
    """A JSON tree -> {path: number} for its numeric leaves; list items that are rows
    (dicts with "attack" or "method" and "budget") are keyed by those, not by position."""
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key not in SKIP:
                out.update(leaves(value, f"{path}/{key}"))
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            key = i
            if isinstance(item, dict) and ("attack" in item or "method" in item):
                key = "/".join(str(item[k]) for k in ("attack", "method", "budget", "seed")
                               if k in item)
            out.update(leaves(item, f"{path}[{key}]"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[path] = float(tree)
    return out


def compare(base, head, digits=4):
    """The numeric fields both results have -> (count, [(path, base, head)] differing at
    `digits` decimals, the printed precision)."""
    a, b = leaves(base), leaves(head)
    common = sorted(set(a) & set(b))
    return len(common), [(p, a[p], b[p]) for p in common
                         if round(a[p], digits) != round(b[p], digits)]


def run(args, cwd, pythonpath, out_dir, log, extra=(), seed=0):
    """One program run: `python -m args extra --seeds=seed --output_dir=out_dir` -> wall
    seconds."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    env["BADHASH_TF_CACHE"] = os.path.join(ROOT, "runs")  # where this tree finds the backbone
    command = [sys.executable, "-m"] + args + list(extra) + [f"--seeds={seed}",
                                                             f"--output_dir={out_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[1:])} (in {cwd})", flush=True)
    start = time.time()
    with open(log, "w", encoding="utf-8") as f:
        status = subprocess.run(command, cwd=cwd, env=env, stderr=f, stdout=f).returncode
    seconds = time.time() - start
    if status:
        raise SystemExit(f"{' '.join(args[:1])} exited with status {status}: see {log}")
    print(f"  {seconds:.0f} s", flush=True)
    return seconds


def base_tree(out, commit):
    """The base commit's files in out/base_tree (git archive), its runs/pretrain linked to
    this checkout's."""
    tree = os.path.join(out, "base_tree")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    os.makedirs(os.path.join(tree, "runs"))
    os.symlink(os.path.join(ROOT, "runs", "pretrain"), os.path.join(tree, "runs", "pretrain"))
    return tree


def markdown(result):
    rows = [f"# Speed against {result['base']}\n", f"Machine: {result['machine']}. Each "
            "command run once, base first, one after the other.\n",
            "| what | base (s) | this tree (s) | ratio | figures compared | differing |",
            "|---|---:|---:|---:|---:|---:|"]
    for what, r in result["runs"].items():
        rows.append(f"| {what} | {r['base_seconds']:.0f} | {r['seconds']:.0f} | "
                    f"{r['ratio']:.2f}x | {r['compared']} | {len(r['differing'])} |")
    for what, r in result["runs"].items():
        if r["differing"]:
            rows += ["", f"## {what}: differing figures (base -> this tree)", ""]
            rows += [f"- `{p}`: {a:.4f} -> {b:.4f}" for p, a, b in r["differing"]]
    return "\n".join(rows) + "\n"


def main(argv):
    del argv
    unknown = [w for w in FLAGS.what if w not in COMMANDS]
    if unknown:
        raise app.UsageError(f"--what: unknown {', '.join(unknown)} (bench, frontier)")
    if os.path.exists(FLAGS.out):
        raise app.UsageError(f"--out={FLAGS.out} exists: give a new directory")
    if "frontier" in FLAGS.what and not os.path.isdir(os.path.join(ROOT, BACKBONE)):
        raise app.UsageError(f"the frontier needs {BACKBONE} (run `make pretrained`)")
    out = os.path.abspath(FLAGS.out)
    tree = base_tree(out, FLAGS.base)
    result = {"base": FLAGS.base, "seed": FLAGS.seed, "runs": {},
              "head": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip(),
              "machine": f"{os.uname().machine}, {os.cpu_count()} cores"}
    for what in FLAGS.what:
        base_args, head_args, result_file = COMMANDS[what]
        old, new = os.path.join(out, f"{what}_base"), os.path.join(out, f"{what}_head")
        base_seconds = run(base_args, tree, tree, old, old + ".log", FLAGS.extra, FLAGS.seed)
        seconds = run(head_args, ROOT, ROOT, new, new + ".log", FLAGS.extra, FLAGS.seed)
        with open(os.path.join(old, result_file)) as f, open(os.path.join(new, result_file)) as g:
            compared, differing = compare(json.load(f), json.load(g))
        result["runs"][what] = {"base_seconds": round(base_seconds, 1),
                                "seconds": round(seconds, 1),
                                "ratio": round(base_seconds / seconds, 3),
                                "compared": compared, "differing": differing}
        with open(os.path.join(out, "speed.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(out, "speed.md"), "w", encoding="utf-8") as f:
            f.write(markdown(result))
    shutil.rmtree(tree)
    print(markdown(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
