"""Exports a pipeline run's trigger generator and hash encoder for TF Serving.

python -m badhash_tf.export_serving --run_dir=DIR [--export_base=export/models]
Writes export/models/badhash_generator/<N>/ and export/models/badhash_hash_encoder/<N>/
(new version numbers, never overwriting) and export/models.config.
"""

import time

from absl import app, flags, logging

from badhash_tf import console
from badhash_tf.cli import startup
from badhash_tf.serving import export

flags.DEFINE_string("run_dir", None, "A finished pipeline run (has report.json).")
flags.DEFINE_string("export_base", "export/models", "TF Serving model base directory.")
flags.DEFINE_enum("encoder", "victim", export.ENCODERS, "Which hash model to serve: the "
                  "backdoored victim, the clean reference victim, or the attacker's surrogate.")
flags.DEFINE_string("config_base_path", "/models", "Model base path written into "
                    "models.config (/models for the docker image; an absolute path for a "
                    "local tensorflow_model_server).")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    console.configure(FLAGS.verbosity)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    tick = time.time()
    with startup.usage_errors():  # a run that is not a finished pipeline run: one line
        paths = export.export_run(FLAGS.run_dir, FLAGS.export_base, FLAGS.encoder,
                                  FLAGS.config_base_path)
    for name, path in paths.items():
        logging.info("exported %s -> %s", name, path)
    logging.info("export took %.1f s", time.time() - tick)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
