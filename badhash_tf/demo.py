"""The demo, from any directory: the public pretrained backbone (made once into the cache),
then BadHash on the embedded digits at the demo preset's operating point, then a one-seed
stealth frontier of BadHash at 30 and 25 dB (`make demo` runs this).

badhash-demo [--output_dir=badhash-demo] [--cache_dir=DIR]      (python -m badhash_tf.demo)
Writes OUT/attack/report.md (samples.png and hash_space.png beside it) and
OUT/frontier/frontier.md, frontier.png; exports the generator and hash encoder for TF
Serving under OUT/export/ (--export_base). The backbone is CACHE/pretrain/fashion (made by
`badhash-pretrain --preset=pretrain_fashion`, about 5 minutes on 2 cores, when missing;
reused and checked against its flags after that). A rerun reuses every finished stage.
"""

import os
import subprocess
import sys
import time

from absl import flags, logging

from badhash_tf import presets
from badhash_tf.console import run_program

flags.DEFINE_string("output_dir", "badhash-demo", "Where the attack, the frontier and the "
                    "exports go.")
flags.DEFINE_string("cache_dir", None, f"The cache where the public backbone is made once "
                    f"and found by name (default: ${presets.CACHE_ENV}, else "
                    "~/.cache/badhash_tf).")
flags.DEFINE_string("export_base", None, "TF Serving exports (default OUT/export/models; '' "
                    "= skip).")
FLAGS = flags.FLAGS
BACKBONE = "fashion"  # the demo preset's --pretrained_backbone (finetune_pretrained)
BUDGETS = "30,25"  # the demo preset's own budget (25 dB) is the frontier's last cell
# The frontier's seed directory links the attack run's finished stages (same flags) instead
# of training them twice: the surrogate, LabCLN, the reference victim, BadHash at 25 dB.
LINKED = {"surrogate": "surrogate", "labcln": "labcln", "reference_victim": "reference_victim",
          os.path.join("psnr_25", "badhash"): "badhash"}


def commands(output_dir, backbone_dir, export_base):
    """The demo's three programs, as argv lists run with this Python."""
    program = [sys.executable, "-m"]
    return [
        program + ["badhash_tf.pretrain", "--preset=pretrain_fashion",
                   f"--output_dir={backbone_dir}"],
        program + ["badhash_tf.pipeline", "--preset=demo", "--baselines=",
                   f"--export_base={export_base}",
                   f"--output_dir={os.path.join(output_dir, 'attack')}"],
        program + ["badhash_tf.frontier", "--preset=demo", f"--psnr_budgets={BUDGETS}",
                   "--methods=badhash", f"--output_dir={os.path.join(output_dir, 'frontier')}"],
    ]


def link_attack_stages(output_dir):
    """The frontier's seed_0 links to the attack run's stages (LINKED), each made once."""
    seed = os.path.join(output_dir, "frontier", "seed_0")
    for link, stage in LINKED.items():
        path = os.path.join(seed, link)
        if os.path.lexists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        target = os.path.join(output_dir, "attack", stage)
        os.symlink(os.path.relpath(target, os.path.dirname(path)), path)


def main(argv):
    del argv
    output_dir = os.path.abspath(FLAGS.output_dir)
    if FLAGS.cache_dir:  # read by presets.backbone_dir, here and in the programs run
        os.environ[presets.CACHE_ENV] = os.path.abspath(FLAGS.cache_dir)
    backbone_dir = presets.backbone_dir(BACKBONE)
    export_base = (os.path.join(output_dir, "export", "models") if FLAGS.export_base is None
                   else FLAGS.export_base)
    pretrain, attack, frontier = commands(output_dir, backbone_dir, export_base)
    for step, command in (("backbone", pretrain), ("attack", attack), ("frontier", frontier)):
        if step == "frontier":
            link_attack_stages(output_dir)
        logging.info("demo, %s: %s", step, " ".join(command[1:]))
        tick = time.time()
        status = subprocess.run(command, check=False).returncode
        if status:
            logging.error("demo stopped at its %s step (`%s` exited with status %d); the same "
                          "command resumes from the finished stages", step,
                          " ".join(command[2:]), status)
            sys.exit(status)
        logging.info("demo, %s: done in %.0f s", step, time.time() - tick)
    logging.info("The attack at 25 dB: %s/attack/report.md (samples.png and hash_space.png "
                 "beside it); the frontier: %s/frontier/frontier.md and frontier.png; the "
                 "backbone: %s", output_dir, output_dir, backbone_dir)


def run():
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
