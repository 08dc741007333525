"""Runs a command-line program's flag parsing and start-up checks on several argument lists
in one process (one TensorFlow start instead of one per case), for the bad-flag tests.

python tests/flag_checks.py MODULE '[["--flag=x", ...], ...]'  -> prints a JSON list of
{"refused": bool, "message": str}, one per argument list. Every case is meant to be
refused before any work; one that is not would start training, so give only bad ones.
"""

import importlib
import json
import sys

from absl import app, flags

from badhash_tf import presets


def run_cases(module_name, cases):
    module = importlib.import_module(module_name)
    results = []
    for argv in cases:
        flags.FLAGS.unparse_flags()
        try:
            module.main(flags.FLAGS([module_name] + presets.expand(argv)))
            results.append({"refused": False, "message": ""})
        except (flags.Error, app.UsageError, ValueError) as e:
            results.append({"refused": True, "message": str(e)})
    return results


if __name__ == "__main__":
    print(json.dumps(run_cases(sys.argv[1], json.loads(sys.argv[2]))))
