"""Adding a method is one module and one config file: a copy of the package gains a toy method that
way (diffusers' attention slicing) and runs it end to end, its parameter's limit checked and its code generated."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import accel_bench

from .conftest import FAST

TOY_MODULE = '''"""Attention slicing (diffusers): attention computed in slices, less memory for some speed."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..limits import Limit, limited
from .base import Accelerator, Code


@dataclass(frozen=True)
class SlicedParams:
    slice_size: int = limited(dataclasses.MISSING, Limit(1, meaning="attention heads per slice"))


class Sliced(Accelerator):
    name = "sliced"
    label = "attention slicing"
    Params = SlicedParams
    order = 50
    constants = {"slice_size": "SLICE_SIZE"}

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        pipe.enable_attention_slicing(self.params.slice_size)

    def remove(self, pipe: Any) -> None:
        pipe.disable_attention_slicing()

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(load=("    pipe.enable_attention_slicing(SLICE_SIZE)",))
'''
TOY_CONFIG = "name: sliced\nmethods: [sliced]\nslice_size: 2\n"
GENERATE = """
from accel_bench.postprocess.codegen import CodeSpec, generate_code
print(generate_code(CodeSpec("models/tiny", "sd", "DDIMScheduler", {}, 4, 64, 7.5, ["sliced"], {"slice_size": 2}), "toy"))
"""


def test_a_method_added_as_one_module_and_one_config_file_runs_end_to_end(tmp_path):
    package = tmp_path / "src" / "accel_bench"
    shutil.copytree(Path(accel_bench.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "accelerators" / "sliced.py").write_text(TOY_MODULE)
    (package / "conf" / "accel" / "sliced.yaml").write_text(TOY_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}

    def cli(*args):
        command = [
            sys.executable,
            "-c",
            "from accel_bench.cli import main; main()",
            *FAST,
            "count_flops=false",
            *args,
            f"summary_path={tmp_path / 'summary.csv'}",
        ]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    ran = cli("accel=sliced", "accel.slice_size=1")
    assert ran.returncode == 0, ran.stderr[-2000:]
    (row,) = csv.DictReader((tmp_path / "summary.csv").open())
    assert (row["status"], row["accel"], json.loads(row["accel_methods"])) == ("ok", "sliced", ["sliced"])
    assert json.loads(row["accel_params"]) == {"slice_size": 1}
    assert float(row["psnr_db"]) > 40  # slicing computes the same attention

    for value in ("0", "abc"):  # out of its limit, and of the wrong type: the same words
        refused = cli("accel=sliced", f"accel.slice_size={value}")
        assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
            f"error: accel.slice_size={value if value.isdigit() else repr(value)} is not allowed: "
            "an integer >= 1 (attention heads per slice)"
        ], refused.stderr
    stranger = cli("accel=deepcache", "accel.slice_size=3")  # the schema knows whose parameter it is
    assert stranger.returncode == 2 and "not a parameter of accel=deepcache" in stranger.stderr, stranger.stderr

    code = subprocess.run(
        [sys.executable, "-c", GENERATE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "SLICE_SIZE = 2" in code and "    pipe.enable_attention_slicing(SLICE_SIZE)" in code
    compile(code, "generated.py", "exec")
