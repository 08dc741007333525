"""The shipped presets: one copy (the checkout's flags/ is the package's presets/), named by
--preset from any directory, expanded where they stand, never naming a checkout path; the
pretrained backbone found by name in the cache; the installed wheel runs them outside the
checkout; the demo's steps."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from absl import flags

from badhash_tf import demo, presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
PACKAGE_FILES = ("badhash_tf", "pyproject.toml", "README.md")


def _values(*names):
    values = flags.FlagValues()
    for name in names:
        flags.DEFINE_string(name, None, "", flag_values=values)
    return values


def test_the_checkout_flags_are_the_package_presets():
    assert os.path.realpath(os.path.join(ROOT, "flags")) == os.path.realpath(presets.PRESET_DIR)
    assert "digits" in presets.names() and "pretrain_fashion" in presets.names()
    assert len(presets.names()) == len(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))


@pytest.mark.parametrize("name", presets.names())
def test_no_preset_names_a_path_of_the_checkout(name):
    with open(presets.path(name), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    assert not [ln for ln in lines if ln.startswith("--flagfile")]  # includes: --preset=
    for line in lines:
        value = line.split("=", 1)[-1].split(":", 1)[-1]  # list:/data/x -> /data/x
        assert "/" not in value or os.path.isabs(value), f"{name}.cfg: {line}"


def test_a_preset_stands_where_it_is_given_and_includes_its_own():
    expanded = presets.expand(["--bits=64", "--preset=digits", "--bits=16"], _values())
    assert expanded[:2] == ["--bits=64", "--preset=digits"] and expanded[-1] == "--bits=16"
    assert expanded.count("--preset=digits_victim") == 0  # an include leaves no marker
    victim = presets.expand(["--preset=digits_victim"], _values())[1:]
    assert expanded[2:2 + len(victim)] == victim  # digits_victim's flags, then digits'
    values = _values("bits", "dataset", "preset")
    values(["prog", *expanded], known_only=True)
    assert (values.bits, values.dataset, values.preset) == ("16", "badhash_digits", "digits")
    values = _values("bits")
    values(["prog", *presets.expand(["--preset=digits_victim"], values)], known_only=True)
    assert values.bits == "32"


def test_a_name_and_the_checkout_file_read_the_same_flags():
    assert presets.read("digits") == presets.read(os.path.join(ROOT, "flags", "digits.cfg"))[1:]
    assert presets.read("digits")[0] == "--dataset=badhash_digits"


def test_an_unknown_preset_is_named_with_the_list():
    with pytest.raises(flags.Error, match=r"--preset=digts: no such preset; the presets are "
                                          r"demo, digits, .*pretrain_fashion"):
        presets.expand(["--preset=digts"], _values())


def test_the_pretrained_backbone_is_found_by_name_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path))
    assert presets.backbone_dir("fashion") == str(tmp_path / "pretrain" / "fashion")
    assert presets.backbone_dir("./fashion") == "./fashion"
    assert "--preset=pretrain_fashion" in presets.make_backbone_hint("fashion")
    assert presets.make_backbone_hint("other") == ""  # no preset makes it


def test_programs_list_their_presets_and_say_a_missing_backbone(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "badhash_tf.train_victim", "--helpshort"],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    listed = shown.stdout.split("--preset:")[1]
    assert "digits_victim" in listed and " digits," not in listed  # victims' presets only
    env = dict(ENV, BADHASH_TF_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "badhash_tf.train_victim",
                           "--preset=digits_victim", "--pretrained_backbone=fashion",
                           f"--output_dir={tmp_path / 'out'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (f"--pretrained_backbone=fashion: no finished pretrained backbone at "
            f"{tmp_path / 'cache' / 'pretrain' / 'fashion'}") in done.stderr
    assert "make it with `badhash-pretrain --preset=pretrain_fashion" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_runs_three_programs_and_links_the_frontier_to_the_attack(tmp_path):
    pretrain, attack, frontier = demo.commands(str(tmp_path), "/cache/pretrain/fashion", "")
    assert pretrain[2:] == ["badhash_tf.pretrain", "--preset=pretrain_fashion",
                            "--output_dir=/cache/pretrain/fashion"]
    assert "--preset=demo" in attack and f"--output_dir={tmp_path}/attack" in attack
    assert "--psnr_budgets=30,25" in frontier and f"--output_dir={tmp_path}/frontier" in frontier
    for stage in ("surrogate", "labcln", "reference_victim", "badhash"):
        (tmp_path / "attack" / stage).mkdir(parents=True)
    demo.link_attack_stages(str(tmp_path))
    demo.link_attack_stages(str(tmp_path))  # a rerun keeps the links
    seed = tmp_path / "frontier" / "seed_0"
    assert os.readlink(seed / "psnr_25" / "badhash") == "../../../attack/badhash"
    assert os.path.samefile(seed / "labcln", tmp_path / "attack" / "labcln")


def test_the_installed_wheel_runs_a_preset_outside_the_checkout(tmp_path, data_dir):
    """The wheel built offline from the package's files holds every preset once; installed
    (no dependencies, no index) into a fresh venv that sees this one's dependencies, its
    commands run from a directory outside the checkout."""
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        copy(os.path.join(ROOT, name), source / name)
    for cache in source.glob("**/__pycache__"):
        shutil.rmtree(cache)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel, = glob.glob(str(tmp_path / "wheel" / "*.whl"))
    shipped = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".cfg")]
    assert sorted(shipped) == [f"badhash_tf/presets/{n}.cfg" for n in presets.names()]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site, = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    with open(os.path.join(site, "dependencies.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(deps) + "\n")  # paths only: this venv's editable finder stays off
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", wheel], check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    shown = subprocess.run([str(venv / "bin" / "badhash-demo"), "--help"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert "badhash-demo [--output_dir=badhash-demo]" in shown.stdout  # (absl: --help exits 1)
    done = subprocess.run([str(venv / "bin" / "badhash-train-victim"), "--preset=digits_victim",
                           "--train_steps=2", "--steps_per_loop=1", f"--data_dir={data_dir}",
                           "--output_dir=victim"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "victim" / "metrics.json").is_file()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import badhash_tf; print(badhash_tf.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60).stdout
    assert where.startswith(site)  # the wheel's package ran, not the checkout's
