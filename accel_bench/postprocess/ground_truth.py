"""Every ground truth must pass its own task: each is judged by the evaluator, as a candidate would be,
against its reference baseline and the baseline cut to its speed; a task whose ground truth does not
beat that bar (or is unfaithful) is dropped, with the reason.

The bar's step count is chosen by measured speeds, so a ground truth that fails it while those speeds
were disturbed (or a cut measured slower than the full baseline, which only noise does) is judged
again on fresh inputs before its task goes; the reason then says what was in doubt both times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..evaluate.file_record import FileRecord
from ..evaluate.manifest import ManifestTask
from ..evaluate.sandbox import SandboxInfo, total_memory_gb
from ..metrics import METRICS

# what a ground truth cannot fail and still make a task (speed verdicts depend on the machine's noise)
DROPPED_FOR = ("failed", "wrong_images", "unfaithful", "no_better_than_fewer_steps")


def why_dropped(records: dict[str, FileRecord]) -> dict[str, str]:
    """Prompt id -> why its task goes: the ground truth failed to run, or failed a fidelity rule."""
    found = {}
    for prompt_id, record in sorted(records.items(), key=lambda item: int(item[0])):
        reasons = [r for r in record.reasons if r in DROPPED_FOR]
        if record.status != "ok" and not reasons:
            reasons = ["failed"]
        if reasons:
            found[prompt_id] = f"{reasons[0]}: {record.error}"
    return found


def over_budget(records: dict[str, FileRecord], kept: Sequence[ManifestTask]) -> dict[str, str]:
    """Prompt id -> what a kept task's ground truth measured over its own quality budget. The task stays
    (its sweep row was within the budget, and the check's few prompts are noisy), but fresh inputs moved
    the metric past its budget once: a candidate as good as the ground truth may fail it."""
    found = {}
    for task in sorted(kept, key=lambda t: int(t.prompt_id)):
        record = records.get(task.prompt_id)
        if record is None or "over_budget" not in record.reasons:
            continue
        metric = METRICS[task.budget_metric]
        value = record.metrics.get(metric.budget_column)
        swept = "" if task.measured_loss is None else f" (its sweep row: {task.measured_loss:.4f})"
        found[task.prompt_id] = (
            f"{metric.budget_label} {'not measured' if value is None else format(value, '.4f')} on fresh inputs, "
            f"over {task.quality_budget:g}{swept}"
        )
    return found


def in_doubt(records: dict[str, FileRecord]) -> list[str]:
    """Prompt ids whose ground truth fails only its fewer-steps bar, and that bar was measured in doubt."""
    firm = set(DROPPED_FOR) - {"no_better_than_fewer_steps"}
    return [
        prompt_id
        for prompt_id, record in sorted(records.items(), key=lambda item: int(item[0]))
        if record.status == "ok"
        and "no_better_than_fewer_steps" in record.reasons
        and not firm & set(record.reasons)
        and record.bar is not None
        and record.bar.doubt
    ]


def judge(
    manifest_path: Path, cache_dir: str, num_prompts: int, only: Optional[Sequence[str]] = None
) -> dict[str, FileRecord]:
    """The evaluator's record of each task's ground truth (of the tasks ``only`` names, if given). The
    files are ours, so no sandbox; every judgement draws fresh inputs."""
    from omegaconf import OmegaConf

    from ..evaluate.config import EvaluateConfig
    from ..evaluate.evaluator import judge_ground_truths

    cfg = OmegaConf.merge(
        OmegaConf.structured(EvaluateConfig),
        {"manifest": str(manifest_path), "code_dir": str(manifest_path.parent), "cache_dir": cache_dir},
        {"num_prompts": num_prompts},
    )
    return judge_ground_truths(cfg, SandboxInfo("none", None, total_memory_gb() / 2, None), only)


def check(manifest_path: Path, cache_dir: str, num_prompts: int) -> tuple[dict[str, FileRecord], list[str]]:
    """(each task's ground-truth record, the prompt ids judged a second time because ``in_doubt``)."""
    records = judge(manifest_path, cache_dir, num_prompts)
    again = in_doubt(records)
    if again:
        print(f"judging {len(again)} ground truth(s) again: their fewer-steps bar was measured in doubt")
        records.update(judge(manifest_path, cache_dir, num_prompts, again))
    return records, again


def write_checks(out: Path, records: dict[str, FileRecord], again: Sequence[str] = ()) -> None:
    """``ground_truth_checks.json``: what each task's ground truth measured and the bar it was judged by
    (the last judgement; ``judgements`` says whether ``in_doubt`` asked for a second)."""
    keys = ("status", "reasons", "error", "speedup", "speedup_low", "target_speedup", "psnr_min_db", "disturbed", "bar")
    checks = {
        prompt_id: {**{k: values[k] for k in keys}, "judgements": 2 if prompt_id in again else 1}
        for prompt_id, values in ((p, r.to_json()) for p, r in records.items())
    }
    (out / "ground_truth_checks.json").write_text(json.dumps(checks, indent=2, sort_keys=True, default=float) + "\n")


def drop(out: Path, manifest: list[ManifestTask], dropped: dict[str, str]) -> list[ManifestTask]:
    """The manifest without the dropped tasks (their ids stay reserved in file_id_mapping.json), and
    ground-truth files no kept task uses removed; ``dropped.json`` says which went and why."""
    kept = [t for t in manifest if t.prompt_id not in dropped]
    used = {t.path_to_gt_code for t in kept} | {t.path_to_reference_baseline for t in kept}
    for task in manifest:
        for path in (task.path_to_gt_code, task.path_to_reference_baseline):
            if task.prompt_id in dropped and path not in used:
                (out / path).unlink(missing_ok=True)
    gone = [
        {"prompt_id": t.prompt_id, "task_key": t.task_key, "accel": t.accel, "reason": dropped[t.prompt_id]}
        for t in manifest
        if t.prompt_id in dropped
    ]
    (out / "dropped.json").write_text(json.dumps(gone, indent=2, sort_keys=True) + "\n")
    return kept
