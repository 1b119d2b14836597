"""`instructrec-batch`: one console script, one subcommand per job.

Every subcommand takes the same configuration options (`--config` files, `--set` overrides,
`--workdir`, `--engine`), builds a typed Config, opens the configured engine and calls one library
function. Errors of this package exit with code 2 and a one-line message; anything else with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from instructrec_batch.config import Config, load_config
from instructrec_batch.errors import InstructRecError
from instructrec_batch.logs import setup_logging
from instructrec_batch.spark.engine import spark_session

log = logging.getLogger("instructrec_batch")


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


_SHORTCUTS = {
    "--base": "shortcut for --set model.base=ALIAS_OR_PATH",
    "--run-id": "shortcut for --set run.run_id=ID",
    "--run-date": "shortcut for --set run.run_date=YYYY-MM-DD",
}


def _add_shortcuts(parser: argparse.ArgumentParser, *flags: str) -> None:
    """The shortcut options several subcommands share (see _config_from for what they set)."""
    for flag in flags:
        parser.add_argument(flag, help=_SHORTCUTS[flag])


def _config_from(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.workdir:
        overrides.insert(0, f"workdir={args.workdir}")
    if args.engine:
        overrides.insert(0, f"engine.kind={args.engine}")
    if getattr(args, "run_id", None):
        overrides.append(f"run.run_id={args.run_id}")
    if getattr(args, "base", None):
        overrides.append(f"model.base={args.base}")
    if getattr(args, "adapter", None):
        overrides.append("score.adapter=null" if args.adapter.lower() == "none" else f"score.adapter={args.adapter}")
    if getattr(args, "k", None):
        overrides.append(f"score.k={args.k}")
    if getattr(args, "output", None):
        overrides.append(f"train.output={args.output}")
    if getattr(args, "run_date", None):
        overrides.append(f"run.run_date={args.run_date}")
    if getattr(args, "max_users", None):
        overrides.append(f"evaluate.max_users={args.max_users}")
    if getattr(args, "source", None):
        overrides.append(f"redial.source={args.source}")
    if getattr(args, "names_removed", False):
        overrides.append("redial.names_removed=true")
    if getattr(args, "full", False):
        overrides += ["prompt.sample_users=null", "evaluate.max_users=null"]
    return load_config(args.config, overrides)


def _stage(module: str, job: str) -> Callable[[argparse.Namespace], int]:
    """The subcommand of stage job `job` in instructrec_batch.stages.`module` (imported when it runs)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        from instructrec_batch.context import run_stage

        cfg = _config_from(args)
        stage = getattr(importlib.import_module(f"instructrec_batch.stages.{module}"), job)
        with spark_session(cfg.engine) as spark:
            result = run_stage(stage, spark, cfg)
        print(result)
        return 0

    return run


def _demo(args: argparse.Namespace) -> int:
    from instructrec_batch.pipeline import run_demo

    print(run_demo(_config_from(args)))
    return 0


def _redial(args: argparse.Namespace) -> int:
    from instructrec_batch.pipeline import run_redial

    print(run_redial(_config_from(args)))
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from instructrec_batch.pipeline import run_pipeline

    print(run_pipeline(_config_from(args), holdout=not args.no_holdout))
    return 0


def _pull_model(args: argparse.Namespace) -> int:
    from instructrec_batch.models.base import check_model_folder, pull

    cfg = _config_from(args)
    base = pull(args.alias, cfg.cache_path, cfg.model.dtype)
    check_model_folder(base.path)
    print(f"{args.alias}: {base.path} (sha256 {base.sha256()})")
    return 0


def _bench(name: str, run: Callable[[Any, Config, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """A bench subcommand: a scratch workdir unless one is given, one session, `run`, its report printed."""

    def command(args: argparse.Namespace) -> int:
        import importlib
        import tempfile

        report = importlib.import_module(f"instructrec_batch.bench.{name}").report
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as scratch:
            if not args.workdir:
                args.workdir = scratch
            if getattr(args, "dtype", None):  # bench scoring's --dtype is score.dtype
                args.overrides.append(f"score.dtype={args.dtype}")
            cfg = _config_from(args)
            with spark_session(cfg.engine) as spark:
                result = run(spark, cfg, args)
        print(report(result, args.json))
        return 0

    return command


def _tables_size(args: argparse.Namespace) -> dict[str, int]:
    return {"users": args.users, "items": args.items, "per_user": args.interactions_per_user}


def _run_bench_prompts(spark: Any, cfg: Config, args: argparse.Namespace) -> Any:
    from instructrec_batch.bench.prompts import bench_prompts

    return bench_prompts(spark, cfg, **_tables_size(args), cands=args.candidates)


def _run_bench_evidence(spark: Any, cfg: Config, args: argparse.Namespace) -> Any:
    from instructrec_batch.bench.evidence import bench_evidence

    cfg = cfg.model_copy(update={"evidence": cfg.evidence.model_copy(update={"sequential": args.sequential})})
    return bench_evidence(spark, cfg, **_tables_size(args), cands=args.candidates)


def _run_bench_protocol(spark: Any, cfg: Config, args: argparse.Namespace) -> Any:
    from instructrec_batch.bench.protocol import bench_protocol

    return bench_protocol(spark, cfg, **_tables_size(args))


def _run_bench_train(spark: Any, cfg: Config, args: argparse.Namespace) -> Any:
    from instructrec_batch.bench.train import bench_train

    return bench_train(spark, cfg, **_tables_size(args), steps=args.steps)


def _run_bench_scoring(spark: Any, cfg: Config, args: argparse.Namespace) -> Any:
    from instructrec_batch.bench.scoring import bench_scoring

    return bench_scoring(spark, cfg, users=args.users, candidates=args.candidates, history=args.interactions_per_user)


# Option specs of the subcommands: (flags, argparse keyword arguments).
Option = tuple[tuple[str, ...], dict[str, Any]]
_ADAPTER_HELP = "adapter folder or models:/<name>@<alias> (--set score.adapter=...); 'none' = base model alone"


@dataclass(frozen=True)
class StageCommand:
    """A subcommand that runs one stage job: where it sits, what it says, which options it adds."""

    path: tuple[str, ...]  # ("data", "movielens") or ("score",)
    help: str
    module: str  # instructrec_batch.stages.<module>
    job: str
    shortcuts: tuple[str, ...] = ()  # flags of _SHORTCUTS
    options: tuple[Option, ...] = ()


STAGE_COMMANDS = (
    StageCommand(
        ("data", "movielens"),
        "MovieLens-100K → interactions, items, holdout, candidates (Delta, under W/tables)",
        "data",
        "movielens_job",
    ),
    StageCommand(
        ("data", "protocol"),
        "from existing interactions and items: holdout split and sampled candidates",
        "data",
        "protocol_job",
    ),
    StageCommand(
        ("data", "redial"),
        "ReDial dialogues (a folder of He et al.'s data/redial/ files) → interactions, items, intents, holdout, "
        "candidates",
        "data",
        "redial_job",
        options=(
            (("--source",), {"required": True, "help": "folder holding test.jsonl, item_ids.json, entity2id.json"}),
            (("--names-removed",), {"action": "store_true", "help": "the seeker's words with film names removed"}),
        ),
    ),
    StageCommand(
        ("evidence",),
        "collaborative evidence of every candidate (co-occurrence, popularity) → candidate_evidence",
        "evidence",
        "evidence_job",
        ("--run-id", "--run-date"),
    ),
    StageCommand(
        ("prompts",),
        "one InstructRec instruction per user → the prompts table (+ rejects)",
        "prompts",
        "prompts_job",
        ("--run-id", "--run-date"),
    ),
    StageCommand(
        ("train",),
        "LoRA instruction tuning → adapter folder + manifest",
        "train",
        "train_job",
        ("--base", "--run-id", "--run-date"),
        ((("--output",), {"help": "shortcut for --set train.output=DIR"}),),
    ),
    StageCommand(
        ("score",),
        "score prompts → top-k per user in recommendations",
        "score",
        "score_job",
        ("--base", "--run-id", "--run-date"),
        (
            (("--adapter",), {"help": _ADAPTER_HELP}),
            (("--k",), {"type": int, "help": "shortcut for --set score.k=K"}),
        ),
    ),
    StageCommand(
        ("plan",),
        "whether tonight's scoring runs the model (and needs a GPU), from the adapter's fusion head; on "
        "Databricks also the task value model_pass",
        "score",
        "plan_job",
        ("--run-id", "--run-date"),
        ((("--adapter",), {"help": _ADAPTER_HELP}),),
    ),
    StageCommand(
        ("promote",),
        "the challenger against the champion on a judged night; the champion alias moves only on a paired win",
        "promote",
        "promote_job",
        ("--run-id", "--run-date"),
    ),
    StageCommand(
        ("evaluate",),
        "HR/NDCG/MRR of the model and baselines → metrics table + report",
        "evaluate",
        "evaluate_job",
        ("--base", "--run-id", "--run-date"),
        (
            (("--adapter",), {"help": "adapter of the lora and hybrid methods; " + _ADAPTER_HELP}),
            (("--max-users",), {"type": int, "help": "shortcut for --set evaluate.max_users=N"}),
        ),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    from instructrec_batch.models.base import KNOWN_MODELS

    common = _common_options()
    parser = argparse.ArgumentParser(prog="instructrec-batch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    groups: dict[str, Any] = {}
    data = commands.add_parser("data", help="load input data")
    groups["data"] = data.add_subparsers(dest="data_command", required=True)
    for command in STAGE_COMMANDS:
        where = groups[command.path[0]] if len(command.path) > 1 else commands
        sub = where.add_parser(command.path[-1], parents=[common], help=command.help)
        for flags, options in command.options:
            sub.add_argument(*flags, **options)
        _add_shortcuts(sub, *command.shortcuts)
        sub.set_defaults(func=_stage(command.module, command.job))

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="the whole pipeline on MovieLens-100K: data, evidence, prompts, train, score, evaluate",
    )
    demo.add_argument("--full", action="store_true", help="all 943 users instead of the configured sample")
    demo.set_defaults(func=_demo)

    redial = commands.add_parser(
        "redial",
        parents=[common],
        help="the whole pipeline on ReDial dialogues (a folder of He et al.'s data/redial/ files): data, evidence, "
        "prompts, train, score, evaluate on ReDial's own split",
    )
    redial.add_argument("--source", required=True, help="folder holding test.jsonl, item_ids.json, entity2id.json")
    redial.add_argument("--names-removed", action="store_true", help="the seeker's words with film names removed")
    redial.set_defaults(func=_redial)

    pipeline = commands.add_parser(
        "pipeline",
        parents=[common],
        help="the whole flow on your tables: protocol, evidence, prompts, train, score, evaluate (one run_id)",
    )
    pipeline.add_argument(
        "--no-holdout",
        action="store_true",
        help="skip the protocol and evaluation stages: score the configured candidates table as on a real night",
    )
    _add_shortcuts(pipeline, "--base", "--run-id", "--run-date")
    pipeline.set_defaults(func=_pipeline)

    model = commands.add_parser("model", help="base models")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    pull = model_commands.add_parser(
        "pull", parents=[common], help="convert a known base model into a safetensors folder in the cache (once)"
    )
    pull.add_argument("alias", choices=sorted(KNOWN_MODELS))
    pull.set_defaults(func=_pull_model)

    bench = commands.add_parser("bench", help="benchmarks that print their figures")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)

    def synthetic_bench(name: str, help_text: str, run: Callable[[Any, Config, argparse.Namespace], Any]) -> None:
        parser = bench_commands.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("--users", type=int, default=100_000)
        parser.add_argument("--items", type=int, default=50_000)
        parser.add_argument("--interactions-per-user", type=int, default=50)
        parser.add_argument("--candidates", type=int, default=20, help="candidates per user")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.set_defaults(func=_bench(name, run))

    synthetic_bench(
        "prompts",
        "the prompts job on synthetic tables: users/s, seconds, peak RSS",
        _run_bench_prompts,
    )
    synthetic_bench(
        "evidence",
        "the evidence job on synthetic tables: seconds, users/s, peak RSS",
        _run_bench_evidence,
    )
    synthetic_bench(
        "protocol",
        "the benchmark protocol (split and sampled candidate lists) on synthetic tables: seconds, peak RSS",
        _run_bench_protocol,
    )
    bench_commands.choices["evidence"].add_argument(
        "--sequential",
        action="store_true",
        help="also train the sequential model (SASRec on the driver, evidence.sequential); off by default, "
        "so the figures are the Spark evidence's",
    )
    bt = bench_commands.add_parser(
        "train",
        parents=[common],
        help="per-sequence vs one-pass LoRA training on the same batches: examples/s and validation loss",
    )
    _add_shortcuts(bt, "--base")
    bt.add_argument("--users", type=int, default=200)
    bt.add_argument("--items", type=int, default=2000)
    bt.add_argument("--interactions-per-user", type=int, default=20)
    bt.add_argument("--steps", type=int, default=20, help="optimisation steps of each run")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.set_defaults(func=_bench("train", _run_bench_train))
    bs = bench_commands.add_parser(
        "scoring",
        parents=[common],
        help="naive vs shared-prefix vs one-pass vs listwise scorers, the compute floor and the score job",
    )
    _add_shortcuts(bs, "--base")
    bs.add_argument("--users", type=int, default=32)
    bs.add_argument("--candidates", type=int, default=20, help="candidates per user")
    bs.add_argument("--interactions-per-user", type=int, default=30, help="history length before the token budget")
    bs.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "auto"],
        help="model dtype (default float32, where the naive/shared-prefix difference is meaningful; "
        "auto = what a score job picks: bf16 on GPUs and AMX CPUs)",
    )
    bs.add_argument("--json", action="store_true", help="print one JSON object")
    bs.set_defaults(func=_bench("scoring", _run_bench_scoring))
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
