"""Runs a program (python tests/count_calls.py MODULE ARGS...) with the checks and loads the
engine promises to do once per run counted, and writes the counts as JSON to the file named
by COUNTS_FILE when the program ends: splits loaded, per dataset and split spec; splits
checked; splits decoded to arrays, per split size; sizes checked; stage decisions checked;
class anchors computed."""

import atexit
import collections
import importlib
import json
import os
import sys

from badhash_tf.data import inputs
from badhash_tf.engine import cells, plan
from badhash_tf.eval import codes

COUNTS = collections.Counter()


def counted(owner, name, key=lambda *a, **k: ""):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        COUNTS[f"{name}{key(*args, **kwargs)}"] += 1
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


counted(inputs, "load_split", lambda config, split: f" {config.dataset} {split}")
counted(inputs, "check_splits")
counted(inputs, "split_arrays", lambda split: f" of {split.size} items")
counted(plan, "check_sizes")
counted(cells, "check")
counted(codes, "class_anchor")
atexit.register(lambda: open(os.environ["COUNTS_FILE"], "w").write(json.dumps(COUNTS)))

if __name__ == "__main__":
    module = importlib.import_module(sys.argv[1])
    sys.argv = [sys.argv[1]] + sys.argv[2:]
    module.run()
