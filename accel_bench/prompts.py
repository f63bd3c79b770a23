"""Prompt sets: the builtin list shipped with accel_bench, or a user's file (.txt, .csv, .jsonl)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

BUILTIN_PATH = Path(__file__).parent / "data" / "prompts.txt"
FILE_SUFFIXES = (".txt", ".csv", ".jsonl")


def _read_txt(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_csv(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "prompt" not in (reader.fieldnames or []):
            raise ConfigError(
                "prompts.path", str(path), f"a .csv with a 'prompt' column (found columns: {reader.fieldnames})"
            )
        return [row["prompt"].strip() for row in reader if (row["prompt"] or "").strip()]


def _read_jsonl(path: Path) -> list[str]:
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(
                "prompts.path", str(path), f"one JSON object per line (line {number}: {error.msg})"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ConfigError(
                "prompts.path", str(path), f"objects with a string 'prompt' field (line {number} has none)"
            )
        if record["prompt"].strip():
            prompts.append(record["prompt"].strip())
    return prompts


_READERS = {".txt": _read_txt, ".csv": _read_csv, ".jsonl": _read_jsonl}


def load_prompts(prompts: Mapping[str, Any]) -> list[str]:
    """All prompts of the configured set, in file order; a run takes the first ``num_prompts``."""
    if prompts["source"] == "builtin":
        if prompts.get("path"):  # the builtin set would run in its place
            raise ConfigError(
                "prompts.path", prompts["path"], "null with prompts=builtin (a file: prompts=file prompts.path=...)"
            )
        return _read_txt(BUILTIN_PATH)
    if prompts["source"] != "file":
        raise ConfigError("prompts.source", prompts["source"], "builtin | file")
    if not prompts.get("path"):
        raise ConfigError(
            "prompts.path", prompts.get("path"), "a .txt, .csv or .jsonl file (required with prompts=file)"
        )
    path = Path(prompts["path"]).expanduser()
    if path.suffix not in FILE_SUFFIXES:
        raise ConfigError("prompts.path", str(path), "a file ending in .txt, .csv or .jsonl")
    if not path.is_file():
        raise ConfigError("prompts.path", str(path), "an existing file")
    found = _READERS[path.suffix](path)
    if not found:
        raise ConfigError("prompts.path", str(path), "a file with at least one non-empty prompt")
    return found
