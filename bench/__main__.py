"""`python -m bench`: the benchmark run of bench/run.py (`make bench`)."""

import sys

from bench.run import main

sys.exit(main())
