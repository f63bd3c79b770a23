"""The suite's fork server answers a command line as a fresh interpreter would: the same exit status,
output and traceback, in the caller's cwd and environment, with threads and atexit run at the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import FORKS

SCRIPTS = {
    "traceback": "def inner():\n    raise ValueError('bad value')\ninner()\n",
    "exit_message": "import sys\nprint('before')\nsys.exit('error: key=value is not allowed')\n",
    "exit_code": "import sys\nsys.exit(3)\n",
    "interpreter_end": (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread joined', flush=True))).start()\n"
        "print('main done')\n"
    ),
    "process": (
        "import os, sys\n"
        "print(os.getcwd(), os.environ.get('ACCEL_BENCH_FORK_PROBE'), sys.argv[1:])\n"
        "print(sys.path[0] == os.path.dirname(os.path.abspath(__file__)), sys.stdin.read() == '')\n"
    ),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_forked_command_is_what_a_fresh_interpreter_gives(tmp_path, monkeypatch, name):
    script = tmp_path / f"{name}.py"
    script.write_text(SCRIPTS[name])
    monkeypatch.setenv("ACCEL_BENCH_FORK_PROBE", str(tmp_path))
    fresh = subprocess.run(
        [sys.executable, str(script), "a=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    forked = FORKS.run([str(script), "a=1"], tmp_path, 60)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == {"traceback": 1, "exit_message": 1, "exit_code": 3}.get(name, 0), fresh.stderr


def test_a_forked_module_runs_as_python_m_and_a_hung_one_times_out(tmp_path):
    fresh = subprocess.run([sys.executable, "-m", "json.tool", "--help"], cwd=tmp_path, capture_output=True, text=True)
    forked = FORKS.run(["-m", "json.tool", "--help"], tmp_path, 60)
    assert (forked.returncode, forked.stdout) == (0, fresh.stdout) and "json.tool" in forked.stdout
    (tmp_path / "hang.py").write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        FORKS.run([str(tmp_path / "hang.py")], tmp_path, 2)
    pid = int(timed_out.value.output.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
