"""spark-submit entry point: the evidence job (collaborative evidence of every candidate).

spark-submit jobs/build_evidence.py --engine spark --config conf/base.yaml --run-date 2026-11-22
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["evidence", *sys.argv[1:]]))
