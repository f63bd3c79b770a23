"""Compare the speedups of the same runs measured in separate device sessions (bench/gpu_proof.sh in each).

Prints each session's speedup [min-max] per run, then every pair of sessions with their relative
difference (issue 7: within 5%), and each session's host launch speed where gpu_proof.sh recorded it.

    python bench/compare_sessions.py SESSION1.csv SESSION2.csv [MORE.csv ...]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pandas as pd

KEY = ["pipeline", "accel", "accel_params", "steps", "batch_size", "interleaved"]


def launch_speed(summary: Path) -> str:
    probe = summary.with_name(f"{summary.stem}_launch.json")
    return (
        f"{json.loads(probe.read_text())['launch_us_median']:.1f} us per kernel launch"
        if probe.exists()
        else "launch speed not recorded"
    )


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]]
    if len(paths) < 2:
        sys.exit("usage: compare_sessions.py SESSION1.csv SESSION2.csv [MORE.csv ...]")
    rows = pd.concat([pd.read_csv(p).assign(session=p.stem) for p in paths], ignore_index=True)
    rows["speedup [min-max]"] = [
        f"{r.speedup:.2f}x [{r.speedup_min:.2f}-{r.speedup_max:.2f}]" for r in rows.itertuples()
    ]
    print(
        rows.pivot_table(
            index=KEY, columns="session", values="speedup [min-max]", aggfunc="first", fill_value="-"
        ).to_string(),
        "\n",
    )

    pairs = []
    for run, group in rows.groupby(KEY):
        by_session = group.set_index("session").speedup
        for first, second in itertools.combinations(sorted(by_session.index), 2):
            difference = abs(by_session[second] - by_session[first]) / by_session[first]
            pairs.append(
                {
                    "pipeline": run[0],
                    "interleaved": run[-1],
                    "sessions": f"{first} / {second}",
                    "difference": f"{difference:.1%}",
                    "within_5pct": difference <= 0.05,
                }
            )
    print(pd.DataFrame(pairs).to_string(index=False), "\n")
    for path in paths:
        print(f"{path.stem}: {launch_speed(path)}")


if __name__ == "__main__":
    main()
