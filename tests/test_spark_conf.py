"""conf/spark-gpu.conf carries the GPU scheduling settings a cluster needs."""

from tests.helpers import REPO


def _properties() -> dict[str, str]:
    pairs = {}
    for line in (REPO / "conf" / "spark-gpu.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            pairs[key] = value.strip()
    return pairs


def test_gpu_properties_schedule_one_task_per_gpu() -> None:
    conf = _properties()
    assert conf["spark.executor.resource.gpu.amount"] == "1" and conf["spark.task.resource.gpu.amount"] == "1"
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith(".sh")
    assert conf["spark.python.worker.reuse"] == "true"
    assert int(conf["spark.sql.execution.arrow.maxRecordsPerBatch"]) > 0
    assert conf["spark.executorEnv.TOKENIZERS_PARALLELISM"] == "false"
