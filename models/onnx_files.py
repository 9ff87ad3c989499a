"""What an ONNX encoder export folder holds, by name, and its manifest: written by
`models.onnx_export.export_onnx`, read by `models.onnx_encoder.OnnxEncoder`. Both import this module and
neither needs the other for it (the export runs an OnnxEncoder to measure itself; the encoder never
needs the exporter).

    <folder>/model.onnx        fp32 graph
    <folder>/model.int8.onnx   the int8 variant
    <folder>/tokenizer.json    the model's fast tokenizer (+ its config files)
    <folder>/onnx.json         the manifest (MANIFEST), written last: a folder without it is an
                               unfinished export
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core.errors import UserError

FORMAT = 1
MANIFEST = "onnx.json"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
OUTPUT_NAMES = ("sentence_embedding", "layers")
STATES_NAME = "token_states"  # the optional third output (models/onnx_export.py's module doc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path, manifest: dict) -> None:
    """Write an export's manifest last and atomically (a temp file, then a rename): a folder without it
    is an unfinished export."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an ONNX export folder; UserError (one line) when the folder is not one."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"ONNX encoder folder {folder} does not exist (export it: python -m models.onnx_export SOURCE {folder})")
    return load_manifest(folder / MANIFEST, "ONNX encoder", FORMAT,
                         ("format", "variants", "inputs", "dim", "n_layers", "hidden", "max_seq_length", "pad_token_id"),
                         missing_hint=" (export it again)")


def load_manifest(path: Path, what: str, fmt: str, required: tuple[str, ...], *, missing_hint: str = "") -> dict:
    """An export's JSON manifest (encoder or sentiment), checked for its keys and format; every problem
    is one UserError line naming `what` ("ONNX encoder", "sentiment ONNX")."""
    if not path.is_file():
        raise UserError(f"{what} folder {path.parent} has no {path.name}: not an export, or an unfinished one{missing_hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} manifest {path} is unreadable: {str(exc).splitlines()[0]}") from None
    missing = [k for k in required if k not in manifest] if isinstance(manifest, dict) else ["everything"]
    if missing:
        raise UserError(f"{what} manifest {path} lacks {', '.join(missing)}")
    if manifest["format"] != fmt:
        raise UserError(f"{what} manifest {path} has format {manifest['format']!r}; this csbot reads {fmt}")
    return manifest
