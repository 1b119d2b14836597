"""spark-submit entry point: the challenger (the version training registered last) against the champion on
the latest judged night; the champion alias moves only when the challenger wins (paired NDCG@10 interval
above 0), or when there is no champion yet.

    spark-submit jobs/promote.py --engine spark --config conf/prod.yaml --run-date 2026-11-22
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
