"""spark-submit entry point: LoRA instruction tuning (examples in Spark, training on the driver).

spark-submit jobs/train_lora.py --engine spark --config conf/prod.yaml --set train.split=time \
    --base /Volumes/main/instructrec/models/base \
    --output /Volumes/main/instructrec/models/adapters/a1
"""

import sys

from instructrec_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
