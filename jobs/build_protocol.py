"""spark-submit entry point: evaluation protocol tables (holdout, candidates) from interactions and items.

spark-submit jobs/build_protocol.py --engine spark --config conf/base.yaml --set tables.root=...
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "protocol", *sys.argv[1:]]))
