"""spark-submit entry point: the evaluate job (metrics table + markdown/PNG report).

    spark-submit jobs/evaluate.py --engine spark --config conf/prod.yaml \
        --run-date 2026-11-22 --set evaluate.night=previous   # an earlier night, by what users did after it
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
