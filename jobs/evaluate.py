"""spark-submit entry point: the evaluate job (metrics table + markdown/PNG report).

    spark-submit jobs/evaluate.py --engine spark --config conf/base.yaml \
        --adapter /mnt/models/adapter --run-date 2026-11-22
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
