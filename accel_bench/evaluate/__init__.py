"""Score code files so that code which accelerates nothing cannot earn a score.

    python -m accel_bench.evaluate manifest=dataset/manifest.json code_dir=agent_outputs/
    python -m accel_bench.evaluate baseline=a.py candidate=b.py steps=25 pipeline=sd15

This process is the trusted side: it never runs a code file. Each file runs in its own sandboxed
process (``sandbox``) that receives batches and sends back images (``protocol``); ``measure`` times
every round trip here. The files of one comparison (baseline, ground truth, candidates) are measured
in interleaved passes on fresh secret inputs (``session``); images are checked against the
baseline's for the same inputs and speedups decided with their spread (``verdicts``, ``records``).
"""
