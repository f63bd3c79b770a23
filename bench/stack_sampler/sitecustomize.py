"""Where a long GPU call spends its time: the main thread's stack of ``run.py``, every STACK_EVERY seconds
(30 unless set), appended to STACK_LOG. A device call that ends at its limit leaves no traceback; this
file does (it found inductor's coordinate descent tuning and the CUDA graphs recorded again each pass):

    PYTHONPATH=bench/stack_sampler:$PYTHONPATH STACK_LOG=$OUT/stacks.txt python run.py ...

Python imports ``sitecustomize`` at start-up from the path; processes other than ``run.py`` (inductor's
compile workers) sample nothing.
"""

import os
import sys
import threading
import time
import traceback


def _stack(thread_id: int) -> list[str]:
    """The thread's stack as text. Holds no frame once it returns: a frame held until the next sample keeps
    its locals alive, CUDA-graph pool tensors among them, and inductor's pool check then fails the run."""
    frame = sys._current_frames().get(thread_id)
    return [] if frame is None else traceback.format_stack(frame)[-40:]


def _sample(path: str, every: float) -> None:
    main, began = threading.main_thread().ident, time.time()
    while True:
        time.sleep(every)
        stack = _stack(main)
        if stack:
            with open(path, "a") as f:
                f.write(f"=== pid {os.getpid()} +{time.time() - began:.0f}s {time.strftime('%H:%M:%S')}\n")
                f.writelines(stack)


if os.environ.get("STACK_LOG") and sys.argv and sys.argv[0].endswith("run.py"):
    threading.Thread(
        target=_sample, args=(os.environ["STACK_LOG"], float(os.environ.get("STACK_EVERY", "30"))), daemon=True
    ).start()
