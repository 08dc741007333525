"""bench/profile_run.py: a run's time split by stage and by kind of work, from its log."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "profile_run", os.path.join(ROOT, "bench", "profile_run.py"))
profile_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_run)


def test_the_profile_splits_a_runs_time_by_stage_and_kind(tiny_run):
    result = profile_run.profile(tiny_run.log.splitlines())  # the tiny run's stderr
    stages = result["stages"]
    assert {"surrogate", "labcln", "reference_victim", "badhash/trigger",
            "badhash/poison_and_victim"} <= set(stages)
    assert stages["surrogate"]["seconds"] == pytest.approx(  # (logged to 0.1 s)
        tiny_run.report["seconds"]["surrogate"], abs=0.06)
    for name, record in stages.items():
        assert sum(record["loops"].values()) <= record["seconds"] + 0.5, name
    assert "first call with tracing" in stages["badhash/trigger"]["loops"]
    kinds = result["kinds"]
    assert kinds["training"] > 0 and kinds[profile_run.START] > 0
    # the stages run one after another: the kinds add up to the wall time
    assert abs(sum(kinds.values()) - result["wall"]) <= 0.05 * result["wall"] + 1.0
    md = profile_run.markdown(result, "pipeline")
    assert "| process start |" in md and "| surrogate |" in md


def test_a_log_without_absl_lines_is_named():
    with pytest.raises(ValueError, match="no log lines with absl's prefix"):
        profile_run.profile(["no prefix here"])


def test_defenses_are_stages_summed_by_kind_across_attacks():
    stamp = "I1205 10:{:02d}:{:02d}.000000 1 stages.py:35] "
    lines = [stamp.format(0, 0) + "stage badhash/trigger ...",
             stamp.format(0, 10) + "stage badhash/trigger done in 10.0 s",
             stamp.format(0, 10) + "stage defenses/badhash/spectral ...",
             stamp.format(0, 40) + "hashing: finished at step 9 in 25.0 s (first call with "
                                   "tracing 5.0 s, training 20.0 s)",
             stamp.format(0, 45) + "stage defenses/badhash/spectral done in 35.0 s",
             stamp.format(0, 45) + "stage defenses/patch/spectral ...",
             stamp.format(1, 0) + "stage defenses/patch/spectral done in 15.0 s"]
    result = profile_run.profile(lines)
    spectral = result["stages"]["defenses/badhash/spectral"]
    assert spectral["loops"] == {"first call with tracing": 5.0, "training": 20.0}
    assert spectral[profile_run.OUTSIDE] == 10.0  # the retrained victim's scoring and more
    assert profile_run.groups(result) == {"defense spectral": (50.0, 2), "trigger": (10.0, 1)}
    md = profile_run.markdown(result, "bench")
    assert "| defense spectral | 50.0 | 83% | 2 |" in md
