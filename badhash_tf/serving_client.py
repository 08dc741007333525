"""Calls the exported BadHash models on a TF Serving server.

python -m badhash_tf.serving_client --server=localhost:8501 --model=badhash_generator \
    --output_dir=poisoned a.png b.jpg
python -m badhash_tf.serving_client --server=localhost:8500 --protocol=grpc \
    --model=badhash_hash_encoder a.png
The generator's poisoned images are written as PNG to --output_dir; hash codes are printed
(one line per image: the path, the code as 0/1 bits, and the packed hex).
"""

import os
import sys

import numpy as np
from absl import app, flags
from PIL import Image

from badhash_tf import console, io_utils
from badhash_tf.serving import client

flags.DEFINE_string("server", "localhost:8501", "host:port (REST 8501, gRPC 8500 by default "
                    "in TF Serving).")
flags.DEFINE_enum("protocol", "rest", ("rest", "grpc"), "How to call the server.")
flags.DEFINE_string("model", "badhash_generator", "Served model name.")
flags.DEFINE_string("signature", "serving_default", "Signature name.")
flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
flags.DEFINE_string("output_dir", "poisoned", "Where poisoned images are written.")
flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each answer.")
FLAGS = flags.FLAGS


def read_image(path):
    """An image file -> uint8 [H, W, 3]; a clear error naming the file otherwise."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise app.UsageError(f"{path}: no such image file") from None
    except OSError as e:
        raise app.UsageError(f"{path}: not a readable image ({e})") from None


def code_line(path, outputs, row=0):
    bits = "".join("1" if v > 0 else "0" for v in outputs["codes"][row])
    packed = bytes(np.asarray(outputs["packed"][row], np.uint8)).hex()
    return f"{path}\t{bits}\t{packed}"


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image files")
    for path, name in zip(paths, client.output_names(paths)):
        image = read_image(path)
        try:
            outputs = client.predict(FLAGS.protocol, FLAGS.server, FLAGS.model, image[None],
                                     FLAGS.signature, FLAGS.version, FLAGS.timeout)
        except client.ServingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if "poisoned" in outputs:
            out = os.path.join(FLAGS.output_dir, name)
            os.makedirs(FLAGS.output_dir, exist_ok=True)
            with io_utils.atomic_path(out) as tmp:
                Image.fromarray(np.asarray(outputs["poisoned"][0], np.uint8)).save(tmp, "PNG")
            print(f"{path}\t-> {out}")
        elif "codes" in outputs:
            print(code_line(path, outputs))
        else:
            print(f"error: model {FLAGS.model} answered outputs {sorted(outputs)}, neither "
                  "'poisoned' nor 'codes'", file=sys.stderr)
            return 1
    return 0


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
