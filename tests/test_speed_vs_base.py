"""bench/speed_vs_base.py: two trees' results compared figure by figure."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "speed_vs_base", os.path.join(ROOT, "bench", "speed_vs_base.py"))
speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speed)


def test_rows_are_matched_by_attack_and_compared_at_the_printed_digit():
    base = {"rows": [{"attack": "badhash", "t_map": 0.91234, "rank": 1},
                     {"attack": "patch", "t_map": 0.40001, "rank": 2}], "seconds": 80.0}
    head = {"rows": [{"attack": "patch", "t_map": 0.40004, "rank": 1, "t_map_ci": 0.1},
                     {"attack": "badhash", "t_map": 0.91254, "rank": 2}], "seconds": 20.0,
            "tier": 1}
    compared, differing = speed.compare(base, head)
    assert compared == 4  # t_map and rank of both rows; seconds and new fields left out
    assert differing == [("/rows[badhash]/rank", 1.0, 2.0),
                         ("/rows[badhash]/t_map", 0.91234, 0.91254),
                         ("/rows[patch]/rank", 2.0, 1.0)]  # 0.40001 and 0.40004 print alike
