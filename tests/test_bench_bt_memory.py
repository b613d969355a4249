"""bench/bt_memory.py: the whole run's peak RSS survives the per-stage high-water-mark resets."""

from _bench_support import bench_script


def test_the_run_peak_is_the_largest_stage_peak_not_the_last() -> None:
    bt_memory = bench_script("bt_memory")
    stages = {"r0.forward.train": {"rss_peak_mib": 1032.2}, "r0.forward.eval": {"rss_peak_mib": 1371.7},
              "r1.forward.eval": {"rss_peak_mib": 480.0}, "mono.src": {"rss_peak_mib": None}}  # fmt: skip
    assert bt_memory.run_peak(480.0, stages) == 1371.7  # wait4 saw only the last stage's
    assert bt_memory.run_peak(2000.0, stages) == 2000.0
