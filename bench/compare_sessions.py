"""Compare the speedups of the same runs measured in separate device sessions (bench/gpu_proof.sh in each).

Prints each session's speedup [min-max] per run, then every pair of sessions with their relative
difference (within 5% is the mark), and each session's host launch speed where gpu_proof.sh recorded it
(``launch.json`` beside the rows). Rows name their session in a ``session`` column (collated files);
a file without one is one session, named by its file.

    python bench/compare_sessions.py bench/results/gpu_proof/rows.csv [MORE.csv ...]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pandas as pd

from accel_bench.record import read_frame

KEY = ["pipeline", "accel", "accel_params", "steps", "batch_size", "interleaved"]


def launch_speeds(summary: Path) -> dict[str, float]:
    """Median microseconds per kernel launch, by session, from ``launch.json`` beside the rows."""
    probe = summary.with_name("launch.json")
    runs = json.loads(probe.read_text())["runs"] if probe.exists() else []
    return {str(run["session"]): run["result"]["launch_us_median"] for run in runs}


def read(path: Path) -> pd.DataFrame:
    rows = read_frame(path)
    return rows.astype({"session": str}) if "session" in rows.columns else rows.assign(session=path.stem)


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths:
        sys.exit("usage: compare_sessions.py ROWS.csv [MORE.csv ...]")
    rows = pd.concat([read(p) for p in paths], ignore_index=True)
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
    speeds = {session: us for path in paths for session, us in launch_speeds(path).items()}
    for session in sorted(rows.session.unique()):
        print(
            f"session {session}: "
            + (f"{speeds[session]:.1f} us per kernel launch" if session in speeds else "launch speed not recorded")
        )


if __name__ == "__main__":
    main()
