"""spark-submit entry point: the score job (top-k per user into `recommendations`).

    spark-submit --conf spark.executor.resource.gpu.amount=1 ... jobs/score.py \
        --engine spark --config conf/base.yaml --adapter /Volumes/main/instructrec/models/adapter --run-date 2026-11-22
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
