"""Compare the speedups of the same runs measured in two device sessions (bench/gpu_proof.sh in each).

    python bench/compare_sessions.py SESSION1.csv SESSION2.csv
"""

from __future__ import annotations

import sys

import pandas as pd

KEY = ["pipeline", "accel", "accel_params", "steps", "batch_size"]


def main() -> None:
    first, second = (pd.read_csv(path) for path in sys.argv[1:3])
    merged = first.merge(second, on=KEY, suffixes=("_1", "_2"))
    merged["difference"] = (merged.speedup_2 - merged.speedup_1).abs() / merged.speedup_1
    merged["within_5pct"] = merged.difference <= 0.05
    columns = KEY[:2] + ["speedup_1", "speedup_min_1", "speedup_max_1", "speedup_2", "speedup_min_2", "speedup_max_2",
                         "difference", "within_5pct", "device_name_1", "device_name_2"]
    print(merged[columns].to_string(index=False))


if __name__ == "__main__":
    main()
