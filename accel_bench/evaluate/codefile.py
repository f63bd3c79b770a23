"""The code-file contract, read without running the file: its step count and what its code is."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Optional


def _parsed(path: Path) -> Optional[ast.Module]:
    """The file's syntax tree; None for a file that does not parse (an agent's may not: its own run in
    the sandbox then fails and is scored so, while the trusted side goes on)."""
    try:
        return ast.parse(Path(path).read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # ValueError: null bytes, a bad encoding
        return None


def code_identity(path: Path) -> str:
    """What a file does, without its module docstring (post-process writes the task text there)."""
    tree = _parsed(path)
    if tree is None:
        return "unparsed:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    body = tree.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        tree.body = body[1:]
    return ast.dump(tree)


def declared_steps(path: Path) -> Optional[int]:
    """``NUM_INFERENCE_STEPS = N`` at module level, else a literal ``num_inference_steps=N`` anywhere."""
    tree = _parsed(path)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
            if any(isinstance(t, ast.Name) and t.id == "NUM_INFERENCE_STEPS" for t in node.targets):
                return node.value.value
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "num_inference_steps":
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
                return node.value.value
    return None


def settable_steps(path: Path) -> bool:
    """Whether the evaluator can run the file at another step count: it has no ``inference()`` (the
    pipeline is called with the count given) or its ``inference()`` can read a module-level
    ``NUM_INFERENCE_STEPS``."""
    tree = _parsed(path)
    if tree is None:
        return False
    names = {
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    }
    defines_inference = any(isinstance(node, ast.FunctionDef) and node.name == "inference" for node in tree.body)
    return not defines_inference or "NUM_INFERENCE_STEPS" in names
