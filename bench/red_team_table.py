"""The CPU red team as a table: every trivial solution and every ground-truth shape, its reason, its
fidelity and the bar it was judged by.

    python bench/red_team_table.py            # about 5 minutes on 2 cores; nothing else running

Runs the red team's own evaluator session (``tests/test_red_team.py``, the one definition of its
cases: the tiny pipeline, DDIM 6 steps, 8 prompts) and writes ``results/red_team/red_team_tiny.json``
and ``red_team_tiny.md`` with command, machine and date.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/test_red_team.py::test_honest_files_pass_on_the_pipeline_and_trivial_accelerations_do_not"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    out = REPO / "bench" / "results" / "red_team"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        table_path = Path(tmp) / "table.json"
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", TEST],
            cwd=REPO,
            env={**os.environ, "ACCEL_BENCH_RED_TEAM_TABLE": str(table_path)},
            capture_output=True,
            text=True,
        )
        if not table_path.exists():
            sys.exit(ran.stdout[-3000:] + ran.stderr[-3000:])
        table = json.loads(table_path.read_text())
    import torch

    record = {
        "command": "python bench/red_team_table.py",
        "test": TEST,
        "test_passed": ran.returncode == 0,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpu": platform.processor(), "threads": torch.get_num_threads()},
        "cases": table,
    }
    (out / "red_team_tiny.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"Red team, tiny pipeline, DDIM 6 steps, 8 prompts; {record['date']}, {platform.node()} "
        f"({record['machine']['threads']} threads); the test {'passed' if ran.returncode == 0 else 'FAILED'}.",
        "",
        "| case | target | speedup | verdict | PSNR median / lowest (dB) | LPIPS | bar | bar's reference | required / pooled (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in table.items():
        bar = case["bar"] or {}
        reference = (
            f"{bar['reference_steps']} steps, {bar['reference_speedup']:.2f}x (the file beside it "
            f"{_fmt(bar.get('file_speedup_beside'), '.2f')}x), {bar['reference_psnr_db']:.1f} dB"
            if bar.get("kind") == "fewer_steps"
            else (bar.get("note") or "-")
        )
        lines.append(
            f"| {name} | {_fmt(case['target_speedup'], 'g')}x | {_fmt(case['speedup'], '.2f')}x | "
            f"{'passed' if case['passed'] else case['reason']} | {_fmt(case['psnr_db'], '.1f')} / "
            f"{_fmt(case['psnr_min_db'], '.1f')} | {_fmt(case['lpips'], '.4f')} | {bar.get('kind', '-')} | {reference} | "
            f"{_fmt(bar.get('required_psnr_db'), '.1f')} / {_fmt(bar.get('psnr_db'), '.1f')} |"
        )
    (out / "red_team_tiny.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
