"""The victims' hashing scheme apart from the attacker's surrogate's (--victim_method,
--victim_backbone, --victim_bits): the paper's transferability claim, measurable."""

import json
import subprocess

import tensorflow as tf

from tests.conftest import PLUGIN_ENV, ROOT, tiny_command


def _hash_kernel(directory):
    """The hash layer's kernel shape [F, bits] in a stage's latest checkpoint."""
    shapes = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(directory))))
    kernel, = [s for name, s in shapes.items()
               if "hash" in name and name.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE")
               and "optimizer" not in name]
    return kernel


def test_victims_of_another_scheme_than_the_surrogate(data_dir, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        tiny_command(data_dir, out, "--baselines=no_labcln", "--export_base=",
                     "--victim_method=csq", "--victim_bits=16", "--victim_backbone=vgg11"),
        cwd=ROOT, env=PLUGIN_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["surrogate"] == {"method": "hashnet", "backbone": "small_cnn", "bits": 32}
    assert report["victim"] == {"method": "csq", "backbone": "vgg11", "bits": 16}
    assert report["config"]["attack"]["surrogate_bits"] == 32
    assert _hash_kernel(out / "surrogate") == [256, 32]  # the small CNN's 256 features
    for victim in (out / "reference_victim", out / "badhash" / "victim",
                   out / "no_labcln" / "victim"):
        assert _hash_kernel(victim) == [4096, 16], victim  # VGG11's 4096-wide FC
    assert _hash_kernel(out / "labcln") == [512, 32]  # LabCLN codes as the surrogate hashes
    codes = json.loads((out / "reference_victim" / "metrics.json").read_text())["config"]
    assert (codes["method"], codes["bits"]) == ("csq", 16)
    assert ("Attacker's surrogate: hashnet, small_cnn, 32 bits; victims (clean reference and "
            "backdoored): csq, vgg11, 16 bits (transfer across schemes).") in (
        out / "report.md").read_text()
