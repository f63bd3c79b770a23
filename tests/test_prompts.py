from __future__ import annotations

import json

import pytest

from accel_bench.errors import ConfigError
from accel_bench.prompts import load_prompts


def test_builtin_set_is_large_and_varied():
    prompts = load_prompts({"source": "builtin"})
    assert len(prompts) >= 64
    assert len(set(prompts)) == len(prompts)
    assert all(prompts)


@pytest.mark.parametrize(
    "name, content",
    [
        ("p.txt", "a cat\n\n  a dog  \na car\n"),
        ("p.csv", 'id,prompt\n1,a cat\n2,"a dog"\n3,a car\n'),
        (
            "p.jsonl",
            "\n".join(json.dumps({"prompt": p, "id": i}) for i, p in enumerate(["a cat", "a dog", "a car"])) + "\n",
        ),
    ],
)
def test_each_file_format(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert load_prompts({"source": "file", "path": str(path)}) == ["a cat", "a dog", "a car"]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("p.csv", "text\na cat\n", "'prompt' column"),
        ("p.jsonl", '{"prompt": "a"}\nnot json\n', "line 2"),
        ("p.jsonl", '{"text": "a"}\n', "'prompt' field"),
        ("p.txt", "\n\n", "at least one"),
        ("p.md", "a cat\n", ".txt, .csv or .jsonl"),
    ],
)
def test_bad_files_are_refused(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=reason) as refused:
        load_prompts({"source": "file", "path": str(path)})
    assert refused.value.key == "prompts.path"
