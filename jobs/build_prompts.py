"""spark-submit entry point: the prompts job (one InstructRec instruction per user).

spark-submit jobs/build_prompts.py --engine spark --config conf/base.yaml --run-date 2026-11-22
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["prompts", *sys.argv[1:]]))
