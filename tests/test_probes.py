"""Trigger probes: each stays within its PSNR budget on real digits, the adversarial ones
move the surrogate toward their code, and the command line writes its table."""

import json
import subprocess

import keras
import numpy as np
import pytest

from badhash_tf import registry
from badhash_tf.attack import budgeted
from badhash_tf.eval import codes, stealth
from badhash_tf.models.generator import psnr_radius
from badhash_tf.models.hashing import HashingModel
from tests.conftest import PLUGIN_ENV, ROOT, tiny_command



@pytest.fixture(scope="module")
def digits(digits48):
    return digits48


@pytest.fixture(scope="module")
def surrogate():
    keras.utils.set_random_seed(3)
    return HashingModel(bits=16, backbone="small_cnn", image_size=32)


@pytest.mark.parametrize("name", registry.attacks(role="probe"))
def test_probe_keeps_its_psnr_budget(digits, surrogate, name):
    images, labels = digits
    target = int(np.argmax(labels[0]))
    trigger = budgeted.make_probe(name, 30.0, surrogate, images, labels, target, steps=30)
    triggered = trigger(images[:16]).numpy()
    assert triggered.shape == images[:16].shape
    assert triggered.min() >= 0.0 and triggered.max() <= 1.0
    assert np.allclose(triggered * 255.0, np.round(triggered * 255.0), atol=1e-3)  # 8-bit
    rmse = np.sqrt(np.mean(np.square(triggered - images[:16]), axis=(1, 2, 3)))
    # every image meets the budget after the 8-bit rounding (RMSE <= 10^(-30/20))
    assert rmse.max() <= 10 ** (-30 / 20) + 1e-6
    assert rmse.max() > 0.0
    assert stealth.stealth_metrics(images[:16], triggered)["psnr_min"] >= 30.0 - 1e-4


def test_tint_is_a_colour_cast(digits, surrogate):
    images, labels = digits
    triggered = budgeted.make_probe("tint", 30.0, surrogate, images, labels, 0)(images).numpy()
    shift = triggered - images
    mid = (images > 0.1) & (images < 0.9)  # away from clipping
    assert np.allclose(shift[..., 0][mid[..., 0]], 8 / 255, atol=1e-3)
    assert np.allclose(shift[..., 1], 0.0)
    assert np.allclose(shift[..., 2][mid[..., 2]], -8 / 255, atol=1e-3)


def test_pgd_moves_the_surrogate_toward_its_code(digits, surrogate):
    images, _ = digits
    code = np.where(np.arange(16) % 2 == 0, 1.0, -1.0).astype(np.float32)
    trigger = budgeted.pgd_trigger(surrogate, code, radius=psnr_radius(30.0) * np.sqrt(
        32 * 32 * 3), logit_scale=1.0, steps=20)
    before = codes.code_alignment(surrogate, images, code, 1.0).numpy()
    after = codes.code_alignment(surrogate, trigger(images), code, 1.0).numpy()
    assert after.mean() > before.mean() + 0.05


def test_universal_perturbation_is_one_pattern_in_the_ball(digits, surrogate):
    images, _ = digits
    code = np.ones(16, np.float32)
    radius = 1.0
    delta = budgeted.universal_perturbation(surrogate, images, code, radius, 1.0, steps=20,
                                          batch_size=16, learning_rate=0.05)
    assert delta.shape == (32, 32, 3)
    assert np.sqrt(np.sum(delta ** 2)) <= radius + 1e-5
    before = codes.code_alignment(surrogate, images, code, 1.0).numpy().mean()
    after = codes.code_alignment(surrogate, images + delta, code, 1.0).numpy().mean()
    assert after > before


def test_unknown_probe_is_named(digits, surrogate):
    images, labels = digits
    with pytest.raises(ValueError, match="--probes: unknown probe 'blur'"):
        budgeted.make_probe("blur", 30.0, surrogate, images, labels, 0)


def test_probe_command_line_writes_its_table(tiny_run, data_dir, tmp_path):
    """Pointed at a pipeline run, probe_triggers reuses its surrogate and reference victim."""
    out = tiny_run.copy(tmp_path / "probes")
    cmd = tiny_command(data_dir, out, "--probes=tint", program="badhash_tf.probe_triggers")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=PLUGIN_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out / 'surrogate'}" in done.stderr
    result = json.loads((out / "probes.json").read_text())
    assert [row["probe"] for row in result["probes"]] == ["tint"]
    for row in result["probes"]:
        assert 0.0 <= row["t_map"] <= 1.0 and 0.0 <= row["clean_map"] <= 1.0
        assert row["psnr"] >= 29.9 and -1.0 <= row["surrogate_alignment"] <= 1.0
    assert result["target_label"] == 0 and result["psnr_budget"] == 30.0
    assert "| tint |" in (out / "probes.md").read_text()
    assert (out / "probe_tint" / "poison" / "poison.json").exists()
    bad = subprocess.run(cmd[:6] + ["--probes=blur"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=PLUGIN_ENV)
    assert bad.returncode != 0 and "--probes: unknown blur" in bad.stderr
