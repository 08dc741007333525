"""The paper's grids: cells of another scheme, code length or poisoned-copy count; shared
stages made once and linked; a generator trained once for cells that differ only in the
victim; the summary's intervals; --compare_with marks inside and outside."""

import dataclasses
import json
import os
import subprocess

import pytest

from badhash_tf import stats
from badhash_tf.config import (AttackConfig, DataConfig, ExperimentConfig, GANConfig,
                               HashingConfig, LabCLNConfig, RetrievalConfig, TrainConfig)
from badhash_tf.engine import plan as plan_module
from badhash_tf.grids import paper_grids
from badhash_tf.render import grid_report
from tests.conftest import PLUGIN_ENV, ROOT, tiny_command

CONFIG = ExperimentConfig(DataConfig(), HashingConfig(bits=32), TrainConfig(),
                          RetrievalConfig(), LabCLNConfig(), GANConfig(), AttackConfig())


def test_transfer_cells_set_the_surrogate_and_the_victim():
    cells = paper_grids.transfer_cells(CONFIG, ["hashnet", "dpsh"])
    assert [c.name for c in cells] == ["hashnet_to_hashnet", "hashnet_to_dpsh",
                                       "dpsh_to_hashnet", "dpsh_to_dpsh"]
    by = {c.name: c.config for c in cells}
    assert by["hashnet_to_dpsh"].hashing.method == "dpsh"
    assert by["hashnet_to_dpsh"].surrogate_hashing.method == "hashnet"
    assert by["dpsh_to_hashnet"].surrogate_hashing.method == "dpsh"
    # a cell of one scheme records no surrogate of its own (the fingerprint of a plain run)
    assert by["dpsh_to_dpsh"].attack.surrogate_method == ""
    assert by["dpsh_to_dpsh"].hashing.method == "dpsh"
    with pytest.raises(ValueError, match="--grid_methods=hashnet,sdh: unknown sdh"):
        paper_grids.transfer_cells(CONFIG, ["hashnet", "sdh"])


def test_bits_and_poison_cells():
    cells = paper_grids.bits_cells(CONFIG, [16, 64])
    assert [(c.config.hashing.bits, c.config.surrogate_hashing.bits) for c in cells] == [
        (16, 16), (64, 64)]
    cells = paper_grids.poison_cells(CONFIG, ["quarter", "half", "all", "5"], 18)
    assert [(c.name, c.config.attack.poison_count) for c in cells] == [
        ("poison_quarter", 4), ("poison_half", 9), ("poison_all", 18), ("poison_5", 5)]
    with pytest.raises(ValueError, match="--grid_poison=50: 50 copies, but the target class "
                                         "has 18 training images"):
        paper_grids.poison_cells(CONFIG, ["50"], 18)
    with pytest.raises(ValueError, match="'third' is neither a count > 0 nor one of"):
        paper_grids.parse_poison(["third"])


def test_poison_cells_of_equal_counts_share_one_attack_run(tmp_path, data_dir):
    """"half" of the target's images and that count named: one attack run, the second cell's
    directory a link to the first's (its figures are the same run's)."""
    config = dataclasses.replace(
        CONFIG, data=DataConfig(data_dir=data_dir),
        retrieval=RetrievalConfig(train_split="train[:64]", query_split="query[:40]",
                                  database_split="database[:200]", map_top_k=100),
        attack=AttackConfig(target_label=0))
    _, available = plan_module.target_images(config, plan_module.DataView(
        config.data, config.retrieval))
    half = str(round(available / 2))
    plans = paper_grids.make_plans("poison", {0: config}, {"poison": ["quarter", "half", half]},
                                   str(tmp_path / "grid"))
    seed = tmp_path / "grid" / "seed_0"
    assert os.readlink(seed / f"poison_{half}" / "badhash") == "../poison_half/badhash"
    assert not (seed / "poison_quarter" / "badhash").exists()  # made when it runs
    assert os.readlink(seed / f"poison_{half}" / "surrogate") == "../poison_quarter/surrogate"
    assert [p.count for _, p in plans[0].values()] == [round(available / 4) or 1,
                                                       int(half), int(half)]


def test_inside_and_compare_rows():
    assert stats.inside(0.50, 0.45, 0.06) and not stats.inside(0.52, 0.45, 0.06)
    assert stats.inside(0.4502, 0.45, None) and not stats.inside(0.46, 0.45, None)
    rows = [{"cell": "a", "attack": "badhash", "t_map": 0.5},
            {"cell": "b", "attack": "badhash", "t_map": 0.9}]
    reference = [{"cell": "a", "attack": "badhash", "t_map": 0.45, "t_map_ci": 0.1},
                 {"cell": "b", "attack": "badhash", "t_map": 0.5, "t_map_ci": 0.1}]
    assert stats.compare_rows(rows, reference, ("cell", "attack"), ("t_map",)) == (1, 1)
    assert rows[0]["compare"]["t_map"] == {"reference": 0.45, "reference_ci": 0.1,
                                           "inside": True}
    assert rows[1]["compare"]["t_map"]["inside"] is False


def test_transfer_grid_end_to_end(tmp_path, data_dir):
    """Two methods, one seed: four cells, the shared stages made once each (links), the
    generator of the HashNet surrogate trained once for both victims, grid.json's rows,
    each marked against a reference (one run: one figure certainly inside its reference
    interval, one certainly outside)."""
    out = tmp_path / "grid"
    reference = {"grid": "transfer", "seeds": [0, 1, 2], "rows": [
        {"cell": "hashnet_to_hashnet", "attack": "badhash", "t_map": 0.5, "t_map_ci": 1.0},
        {"cell": "hashnet_to_csq", "attack": "badhash", "t_map": 5.0, "t_map_ci": 0.1}]}
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    cmd = [*tiny_command(data_dir, out, program="badhash_tf.grid"), "--grid=transfer",
           "--grid_methods=hashnet,csq", f"--compare_with={tmp_path / 'ref.json'}"]
    done = subprocess.run(cmd, cwd=ROOT, env=PLUGIN_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    seed = out / "seed_0"
    assert sorted(os.listdir(seed)) == sorted(["hashnet_to_hashnet", "hashnet_to_csq",
                                               "csq_to_hashnet", "csq_to_csq"])
    assert os.readlink(seed / "hashnet_to_csq" / "surrogate") == \
        "../hashnet_to_hashnet/surrogate"
    assert os.readlink(seed / "csq_to_csq" / "reference_victim") == \
        "../hashnet_to_csq/reference_victim"
    assert not (seed / "csq_to_hashnet" / "surrogate").is_symlink()
    assert done.stderr.count("the same generator as") == 2  # one per surrogate
    variant = json.loads((seed / "hashnet_to_csq" / "badhash" / "variant.json").read_text())
    assert variant["config"]["hashing"]["method"] == "csq"
    assert variant["config"]["attack"]["surrogate_method"] == "hashnet"
    result = json.loads((out / "grid.json").read_text())
    assert [(r["surrogate"], r["victim"], r["seeds"]) for r in result["rows"]] == [
        ("hashnet", "hashnet", 1), ("hashnet", "csq", 1), ("csq", "hashnet", 1),
        ("csq", "csq", 1)]
    first = result["rows"][0]
    assert first["backdoor_gain"] == pytest.approx(first["t_map"] - first["t_map_clean_victim"])
    assert (out / "grid.png").stat().st_size > 5000
    assert "| hashnet |" in (out / "grid.md").read_text()
    assert result["rows"][0]["compare"]["t_map"] == {"reference": 0.5, "reference_ci": 1.0,
                                                     "inside": True}
    assert result["rows"][1]["compare"]["t_map"]["inside"] is False
    assert "compare" not in result["rows"][2]  # no reference row
    assert result["compare"]["outside"] == 1 and result["compare"]["seeds"] == [0, 1, 2]
    assert "✗" in (out / "grid.md").read_text()


def test_a_reference_is_read_from_its_directory_and_refused_with_one_line(tmp_path):
    """--compare_with takes a grid.json or its directory; another grid's, or a file that is
    not a grid.json, is refused naming the flag."""
    (tmp_path / "grid.json").write_text(json.dumps({"grid": "bits", "rows": []}))
    assert paper_grids.load_reference(str(tmp_path), "bits")["source"] == str(
        tmp_path / "grid.json")
    with pytest.raises(ValueError, match=r"^--compare_with=.*grid\.json: a 'bits' grid, "
                                         r"not --grid=transfer$"):
        paper_grids.load_reference(str(tmp_path), "transfer")
    (tmp_path / "other.json").write_text(json.dumps({"grid": "bits"}))
    with pytest.raises(ValueError, match=r"^--compare_with=.*other\.json: not a grid\.json "
                                         r"that reads back \(KeyError: 'rows'\)$"):
        paper_grids.load_reference(str(tmp_path / "other.json"), "bits")


def test_the_report_states_the_scheme_without_what_the_grid_varies():
    scheme = {"method": "hashnet", "backbone": "small_cnn", "bits": 32}
    assert grid_report._scheme(scheme, ["bits"]) == "hashnet, small_cnn"
    assert grid_report._scheme(scheme, ["surrogate", "victim"]) == "small_cnn, 32 bits"
    assert grid_report._scheme(scheme, ["poison"]) == "hashnet, small_cnn, 32 bits"
