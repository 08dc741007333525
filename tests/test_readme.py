"""The README cannot drift from the code: every program its commands name exists and
shows its help, every flag of a command exists in that program, every flag named in the
prose exists in some program, every preset it names exists; and the package's metadata
declares the dependencies and the console scripts (one of which runs)."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

from badhash_tf import presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
COMMAND = re.compile(r"python -m (badhash_tf\.\w+)([^\n`]*)")
FLAG = re.compile(r"(?<![\w-])--(?:no)?([a-z][a-z0-9_]*[a-z0-9])(?![\w-])")
SCRIPTS = ("badhash-demo", "badhash-pretrain", "badhash-pipeline", "badhash-frontier", "badhash-defend",
           "badhash-grid",
           "badhash-bench",
           "badhash-train-victim", "badhash-probe", "badhash-export", "badhash-client",
           "badhash-launch-local")


def _commands():
    """(module, the flags its README commands pass) for every `python -m badhash_tf.X`."""
    found = {}
    for module, rest in COMMAND.findall(README):
        rest = rest.split(" -- ")[0]  # launch_local: what follows `--` is another command
        found.setdefault(module, set()).update(FLAG.findall(rest.split("#")[0]))
    return found


def test_every_readme_command_and_flag_exists():
    commands = _commands()
    assert {"badhash_tf.pipeline", "badhash_tf.frontier", "badhash_tf.pretrain",
            "badhash_tf.defend", "badhash_tf.train_victim"} <= set(commands)
    done = subprocess.run([sys.executable, "tests/readme_flags.py", *sorted(commands)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    programs = json.loads(done.stdout.splitlines()[-1])
    for module, used in commands.items():
        known = set(programs[module]["flags"]) | {"flagfile"}  # (absl's, at parse time)
        assert used <= known, (module, sorted(used - known))
        assert f"python -m {module}" in programs[module]["help"], module  # its usage line
    anywhere = set().union(*(set(p["flags"]) for p in programs.values()))
    named = set(FLAG.findall(README)) - {"flagfile", "helpshort", "helpfull", "help"}
    others = {"rm", "port", "rest_api_port", "model_config_file", "enable_model_warmup",
              "logdir", "replicas", "saved_model", "sizes", "xla", "out", "log"}  # docker,
    # TF Serving, tensorboard, bench/ scripts
    unknown = {f for f in named if f not in anywhere and f not in others}
    assert not unknown, sorted(unknown)
    for preset in set(re.findall(r"flags/[\w]+\.cfg", README)):
        assert os.path.isfile(os.path.join(ROOT, preset)), preset
    named = set(re.findall(r"--presets?=([a-z0-9_,]+)", README)) | set(
        re.findall(r"`badhash-pretrain --preset=([a-z0-9_]+)", README))
    for preset in {n for group in named for n in group.split(",")}:
        assert preset in presets.names(), preset


def test_the_package_declares_its_dependencies_and_console_scripts():
    meta = importlib.metadata.distribution("badhash-tf")
    requires = " ".join(meta.requires or [])
    for name in ("tensorflow-cpu==2.21.0", "keras", "tensorflow-datasets", "absl-py",
                 "numpy", "extra == \"test\"", "extra == \"gpu\"", "extra == \"serving\""):
        assert name in requires, name
    scripts = {e.name: e.value for e in meta.entry_points if e.group == "console_scripts"}
    assert set(SCRIPTS) <= set(scripts)
    for name in SCRIPTS:  # each names a program's run()
        module, func = scripts[name].split(":")
        assert func == "run" and os.path.isfile(
            os.path.join(ROOT, *module.split(".")) + ".py"), scripts[name]
    script = shutil.which("badhash-pipeline", path=os.path.dirname(sys.executable))
    assert script, "badhash-pipeline is not installed beside this Python"
    done = subprocess.run([script, "--helpshort"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr  # (absl's help exits 1)
    assert "The BadHash attack end to end" in out and "--export_base" in out
