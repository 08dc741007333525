"""The command-line programs' console: by default our own lines (stages with their times,
progress, results and where they are written) and every warning; the libraries' INFO
chatter (tfds, TensorFlow: "Constructing tf.data.Dataset", "Sharding callback duration",
...) only with --verbosity=1 or more."""

import logging as std_logging
import os
import sys

from absl import app, flags, logging

from badhash_tf import io_utils, presets

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class OwnLinesAndWarnings(std_logging.Filter):
    """Passes records logged from this package's files, and warnings and errors from
    anywhere."""

    def filter(self, record):
        return (record.levelno >= std_logging.WARNING
                or os.path.abspath(record.pathname).startswith(PACKAGE_DIR))


def configure(verbosity):
    """Quiets the libraries' INFO lines unless `verbosity` (absl's --verbosity) >= 1."""
    if verbosity >= 1:
        return
    logging.get_absl_handler().addFilter(OwnLinesAndWarnings())
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)


def run_program(main, doc, module_name, flags_parser=None):
    """Runs a program's `main` with absl, from `python -m` or a console script
    (pyproject.toml [project.scripts]): `--help` and `--helpshort` show the program's
    docstring `doc` and its own flags (absl finds both through the main module); each
    --preset=NAME on the command line (or in a --flagfile) stands for that shipped preset's
    flags. `flags_parser(argv)`, when given, replaces absl's (e.g. to add a hint to an
    error)."""
    sys.modules["__main__"].__doc__ = doc
    if module_name != "__main__":  # a console script: absl keyed the flags by module name
        sys.argv[0] = module_name
    parse = flags_parser or app.parse_flags_with_usage

    def parse_with_presets(argv):
        try:
            expanded = presets.expand(argv[1:])
        except flags.Error as e:  # as absl's parser says a bad flag: one line, status 1
            sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                             "Pass --helpshort or --helpfull to see help on flags.\n")
            sys.exit(1)
        return parse(argv[:1] + expanded)
    app.run(interruptible(main), flags_parser=parse_with_presets)


INTERRUPTED = ("interrupted: finished stages and each stage's last checkpoint are kept; "
               "the same command resumes from them")


def interruptible(main):
    """`main` ending on Ctrl-C (SIGINT) with one line instead of a traceback (exit status
    130, as a shell's), and on a run's file that does not read back with the line naming it
    and what to do (status 1); the run-directory lock is released on the way out."""
    def run(argv):
        try:
            return main(argv)
        except KeyboardInterrupt:
            logging.error(INTERRUPTED)
            sys.exit(130)
        except io_utils.BrokenFileError as e:
            logging.error("%s", e)
            sys.exit(1)
    return run
