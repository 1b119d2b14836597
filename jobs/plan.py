"""spark-submit entry point: whether tonight's scoring runs the model (and needs a GPU), from the adapter's
fusion head; on Databricks it also sets the task value `model_pass` the nightly's condition task reads.

    spark-submit jobs/plan.py --engine spark --config conf/prod.yaml \
        --adapter models:/main.instructrec.instructrec_adapter@champion
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["plan", *sys.argv[1:]]))
