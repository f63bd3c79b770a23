"""accel_bench from a checkout: the same command line as the installed ``accel-bench``.

python run.py pipeline=sdxl accel=deepcache
python run.py -m accel=deepcache accel.cache_interval=2,3,4
"""

from accel_bench.cli import main

if __name__ == "__main__":
    main()
