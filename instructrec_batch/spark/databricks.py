"""Databricks job glue: task values, which later tasks of a workflow read.

A task value set here is what a workflow's condition task compares (`{{tasks.<task>.values.<key>}}`),
so a decision computed in Python (whether tonight needs a GPU) can skip a task before its cluster
starts. `pyspark.dbutils` exists only on Databricks runtimes; elsewhere nothing is set.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def set_task_value(spark: SparkSession, key: str, value: Any) -> bool:
    """Set the running Databricks job task's value `key`; False (nothing set) off Databricks."""
    try:
        from pyspark.dbutils import DBUtils  # Databricks runtimes only
    except ImportError:
        return False
    DBUtils(spark).jobs.taskValues.set(key=key, value=value)
    return True
