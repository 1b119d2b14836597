"""The house's rules that import-linter cannot check: narrow inputs, one owner per concept."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import instructrec_batch

PACKAGE = Path(instructrec_batch.__file__).parent
# Where the whole Config may be taken: loading it, the job context, the pipeline, and the command line
# (the CLI module and its benchmark commands, which set up synthetic tables and run stage jobs).
WHOLE_CONFIG_ALLOWED = ("instructrec_batch.config", "instructrec_batch.context", "instructrec_batch.pipeline")
ENTRY_POINTS = ("instructrec_batch.cli", "instructrec_batch.bench")


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "instructrec_batch.")]


def _takes_config(function: object) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if re.fullmatch(r"Config|Config \| None|Optional\[Config\]", str(p.annotation))]


def test_no_function_outside_loading_context_pipeline_and_cli_takes_the_whole_config() -> None:
    offenders = []
    for name in _modules():
        if name.startswith(WHOLE_CONFIG_ALLOWED + ENTRY_POINTS):
            continue
        module = importlib.import_module(name)
        for _, member in inspect.getmembers(module):
            candidates = [member]
            if inspect.isclass(member):
                candidates = [m for _, m in inspect.getmembers(member, inspect.isfunction)]
            for function in candidates:
                if getattr(function, "__module__", None) != name:
                    continue
                offenders += [f"{name}.{function.__qualname__}({p})" for p in _takes_config(function)]
    assert not offenders, offenders


def test_the_signature_check_would_catch_a_function_that_takes_the_config() -> None:
    from instructrec_batch.config import Config

    def leaky(cfg: Config) -> None: ...

    leaky.__annotations__["cfg"] = "Config"  # as `from __future__ import annotations` leaves it
    assert _takes_config(leaky) == ["cfg"]


def test_stage_jobs_take_a_context_and_configuration_sections_only() -> None:
    from instructrec_batch.config import Config
    from instructrec_batch.context import JobContext

    sections = set(Config.model_fields) | {"cache_path", "catalog"}
    for name in _modules():
        if not name.startswith("instructrec_batch.stages."):
            continue
        module = importlib.import_module(name)
        for job_name, job in inspect.getmembers(module, inspect.isfunction):
            if not job_name.endswith("_job") or job.__module__ != name:
                continue
            first, *rest = inspect.signature(job).parameters
            assert first == "ctx" and "JobContext" in str(inspect.signature(job).parameters["ctx"].annotation)
            assert set(rest) <= sections, f"{name}.{job_name} asks for {set(rest) - sections}"
    assert "Config" not in {str(f.type) for f in JobContext.__dataclass_fields__.values()}


def _calls(tree: ast.AST, names: set[str]) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in names:
                return True
    return False


def test_only_the_ranking_package_fits_a_blend_or_fills_missing_evidence() -> None:
    """A blend is fitted (fit_ranker over evidence terms) and missing evidence filled (fillna / coalesce
    of evidence columns) in instructrec_batch/ranking only; everyone else calls it."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "ranking" in path.relative_to(PACKAGE).parts:
            continue
        source = path.read_text()
        tree = ast.parse(source)
        if _calls(tree, {"fit_ranker"}):
            offenders.append(f"{path.name}: fits a ranker")
        if _calls(tree, {"fillna"}) and "EVIDENCE_COLUMNS" in source:
            offenders.append(f"{path.name}: fills evidence columns")
        if re.search(r"coalesce\(F\.col\(c\), F\.lit\(0\.0\)\)\.alias\(c\) for c in C\.EVIDENCE_COLUMNS", source):
            offenders.append(f"{path.name}: fills evidence columns")
    assert not offenders, offenders
