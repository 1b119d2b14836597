"""`instructrec-batch`: one console script, one subcommand per job (DESIGN §9).

Every subcommand takes the same configuration options (`--config` files, `--set` overrides,
`--workdir`, `--engine`), builds a typed Config, opens the configured engine and calls one library
function. Errors of this package exit with code 2 and a one-line message; anything else with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pyspark.sql import SparkSession

from instructrec_batch.config import Config, load_config
from instructrec_batch.engine import spark_session
from instructrec_batch.errors import InstructRecError
from instructrec_batch.logs import setup_logging

log = logging.getLogger("instructrec_batch")

SparkJob = Callable[[SparkSession, Config], object]


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file; repeat to layer overlays on a base (later wins)",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set engine.kind=spark (repeatable)",
    )
    common.add_argument("--workdir", help="shortcut for --set workdir=W (tables under W/tables)")
    common.add_argument("--engine", choices=["local", "spark", "connect"], help="shortcut for engine.kind")
    common.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return common


def _config_from(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.workdir:
        overrides.insert(0, f"workdir={args.workdir}")
    if args.engine:
        overrides.insert(0, f"engine.kind={args.engine}")
    return load_config(args.config, overrides)


def _run_spark_job(job: SparkJob) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        cfg = _config_from(args)
        with spark_session(cfg.engine) as spark:
            result = job(spark, cfg)
        print(result)
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    from instructrec_batch.data.job import movielens_job, protocol_job

    common = _common_options()
    parser = argparse.ArgumentParser(prog="instructrec-batch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load input data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    ml = data_commands.add_parser(
        "movielens",
        parents=[common],
        help="MovieLens-100K → interactions, items, holdout, candidates (Delta, under W/tables)",
    )
    ml.set_defaults(func=_run_spark_job(movielens_job))
    proto = data_commands.add_parser(
        "protocol",
        parents=[common],
        help="from existing interactions and items: holdout split and sampled candidates",
    )
    proto.set_defaults(func=_run_spark_job(protocol_job))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except InstructRecError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
