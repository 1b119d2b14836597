"""LoRA adapter artifacts: save with a manifest, verify before use, load with peft.

An adapter folder holds adapter_config.json, adapter_model.safetensors, manifest.json and, when
training fitted one, fusion_head.json (the linear head that combines the model's answer score with
collaborative evidence) and blend.json (the evidence blend that head is built on, fitted on the training
run's validation lists: the evaluation of that run reads it instead of fitting it again). The manifest
records the adapter's sha256 (over the adapter files, the fusion head and the blend), the base model it
was trained
on (alias and sha256), the template version and the training figures. `verify_adapter` recomputes
the sha256 and compares the base, so a tampered, truncated or mismatched adapter is refused before
any model is loaded or any task is scheduled.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrec_batch.errors import ArtifactError
from instructrec_batch.hashing import sha256_file
from instructrec_batch.models.base import pickle_weight_files
from instructrec_batch.ranking.ranker import LinearRanker

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FUSION_HEAD = "fusion_head.json"  # optional; hashed with the adapter files when present
BLEND = "blend.json"  # optional, written with a fusion head; hashed likewise
_OPTIONAL = (FUSION_HEAD, BLEND)
MANIFEST = "manifest.json"


def adapter_sha256(folder: Path) -> str:
    """sha256 over the adapter files' (and fusion head's and blend's) names and contents; the manifest is not
    part of it."""
    names = [*ADAPTER_FILES, *(name for name in _OPTIONAL if (folder / name).is_file())]
    return _combine({name: sha256_file(folder / name) for name in names})


def blob_sha256(files: Mapping[str, bytes]) -> str:
    """The same digest as `adapter_sha256`, from file contents held in memory (executor side)."""
    names = [*ADAPTER_FILES, *(name for name in _OPTIONAL if name in files)]
    return _combine({name: hashlib.sha256(files[name]).hexdigest() for name in names})


def _combine(digests: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name, value in digests.items():
        digest.update(name.encode() + b"\0" + value.encode() + b"\n")
    return digest.hexdigest()


def read_blob(info: AdapterInfo) -> dict[str, bytes]:
    """The adapter's files as bytes, to ship to executors (broadcast or UDF closure)."""
    names = [*ADAPTER_FILES, MANIFEST, *(name for name in _OPTIONAL if (info.path / name).is_file())]
    return {name: (info.path / name).read_bytes() for name in names}


def materialize_blob(files: Mapping[str, bytes], expected_sha256: str, folder: Path) -> AdapterInfo:
    """Check shipped adapter bytes against the driver's sha256 and write them to `folder`.

    The driver verified the folder (files, manifest, sha256) before shipping; here the bytes are hashed
    once more, which is all the executor needs: equal digests mean the very files the driver checked.
    """
    actual = blob_sha256(files)
    if actual != expected_sha256:
        raise ArtifactError(
            f"adapter bytes received on this executor have sha256 {actual}, expected {expected_sha256}: "
            "they were altered in transit; re-run the job"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return AdapterInfo(folder, actual, json.loads(files[MANIFEST]))


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    sha256: str
    manifest: dict[str, Any]

    def fusion_head(self) -> LinearRanker | None:
        """The fusion head trained with this adapter, or None for a text-only adapter."""
        return self._ranker(FUSION_HEAD)

    def blend(self) -> LinearRanker | None:
        """The evidence blend the fusion head is built on (fitted on the training run's validation lists),
        or None when training fitted no head."""
        return self._ranker(BLEND)

    def _ranker(self, name: str) -> LinearRanker | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"adapter {self.path}: {name} is not valid JSON ({exc})") from exc
        return LinearRanker.from_dict(data, f"adapter {self.path} {name}")


def save_adapter(
    peft_model: Any,
    folder: Path,
    manifest: dict[str, Any],
    fusion_head: LinearRanker | None = None,
    blend: LinearRanker | None = None,
) -> AdapterInfo:
    """Save adapter weights as safetensors (and the fusion head and its blend) plus a manifest carrying
    their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(folder, safe_serialization=True)
    for name, ranker in ((FUSION_HEAD, fusion_head), (BLEND, blend)):
        if ranker is not None:
            (folder / name).write_text(json.dumps(ranker.to_dict(), indent=2))
    sha = adapter_sha256(folder)
    full = {**manifest, "adapter_sha256": sha}
    (folder / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return AdapterInfo(folder, sha, full)


def verify_adapter(folder: Path | str, *, base_sha256: str | None = None) -> AdapterInfo:
    """Check files, format, sha256 and (optionally) the base model; raise ArtifactError with the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"adapter folder {folder} does not exist; train one with `instructrec-batch train`")
    unsafe = pickle_weight_files(folder)
    if unsafe:
        raise ArtifactError(
            f"adapter {folder} holds pickle-format weights ({', '.join(unsafe)}), which can run code when loaded; "
            "only safetensors adapters are accepted: re-save it with save_pretrained(safe_serialization=True)"
        )
    missing = [name for name in (*ADAPTER_FILES, MANIFEST) if not (folder / name).is_file()]
    if missing:
        raise ArtifactError(f"adapter {folder} is missing {', '.join(missing)}; re-run training or copy it whole")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"adapter {folder}: {MANIFEST} is not valid JSON ({exc})") from exc
    actual = adapter_sha256(folder)
    if manifest.get("adapter_sha256") != actual:
        raise ArtifactError(
            f"adapter {folder} has sha256 {actual} but its manifest says {manifest.get('adapter_sha256')}: the files "
            "were changed or corrupted after training; restore them or re-train"
        )
    if base_sha256 is not None and manifest.get("base_model_sha256") != base_sha256:
        raise ArtifactError(
            f"adapter {folder} was trained on base model {manifest.get('base_model')} (sha256 "
            f"{str(manifest.get('base_model_sha256'))[:12]}…), not on the configured one (sha256 {base_sha256[:12]}…); "
            "set model.base to the adapter's base or re-train"
        )
    return AdapterInfo(folder, actual, manifest)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Silence the FutureWarning transformers raises when peft's PeftModel reads the deprecated
    `is_gradient_checkpointing` property while wrapping a model (peft's call, not this package's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_adapter(model: Any, info: AdapterInfo) -> Any:
    """Wrap `model` with the verified adapter (inference mode)."""
    from peft import PeftModel

    with peft_wrapping():
        return PeftModel.from_pretrained(model, str(info.path), is_trainable=False)
