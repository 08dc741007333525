"""Lists, for each program module named on the command line, its flags and its --helpshort
text, in one process (importing each in turn and removing its flags before the next), for
the README test.

python tests/readme_flags.py badhash_tf.pipeline badhash_tf.frontier ...
-> prints {module: {"flags": [...], "help": str}} as JSON.
"""

import importlib
import json
import sys

from absl import flags


def program_flags(modules):
    out = {}
    base = set(flags.FLAGS)
    for name in modules:
        module = importlib.import_module(name)
        defined = set(flags.FLAGS)
        out[name] = {"flags": sorted(defined),
                     "help": (module.__doc__ or "") + flags.FLAGS.module_help(module)}
        for flag in defined - base:  # the next program defines its own (same names too)
            delattr(flags.FLAGS, flag)
    return out


if __name__ == "__main__":
    print(json.dumps(program_flags(sys.argv[1:])))
