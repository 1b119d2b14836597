"""spark-submit entry point: MovieLens-100K demo data into interactions, items, holdout, candidates.

spark-submit jobs/load_movielens.py --engine spark --workdir /Volumes/main/instructrec/work
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "movielens", *sys.argv[1:]]))
