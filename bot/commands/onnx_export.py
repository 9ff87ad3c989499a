"""Export a sentence-transformers encoder to ONNX (fp32) and a dynamic int8 variant, for CPU serving.

    python -m models.onnx_export SOURCE FOLDER [--no-int8] [--opset 17]
        (SOURCE: builtin:all-MiniLM-L6-v2 or a sentence-transformers folder)

The command line of that module (which stays where the docs call it, as a shim that calls
`script_main`); it is no `csbot` subcommand. What is exported, the folder's files and its manifest
are models/onnx_export.py. Prints each variant's file, size and agreement with torch. Exit codes: 0
exported, 2 bad usage or a source or folder that cannot be exported.
"""

from __future__ import annotations

import argparse
import sys

from core.errors import UserError
from models.onnx_export import DEFAULT_OPSET, export_onnx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="builtin:all-MiniLM-L6-v2 or a sentence-transformers folder")
    parser.add_argument("folder", help="where to write model.onnx, model.int8.onnx, tokenizer.json, onnx.json")
    parser.add_argument("--no-int8", action="store_true", help="fp32 only")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = export_onnx(args.source, args.folder, variants=("fp32",) if args.no_int8 else ("fp32", "int8"),
                               opset=args.opset)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for variant, entry in manifest["variants"].items():
        print(f"{variant}: {entry['file']} {entry['bytes'] / 1e6:.1f} MB, vs torch {entry.get('vs_torch')}")
    print(f"exported in {manifest['export_seconds']} s")
    return 0


def script_main(argv: list[str] | None = None) -> int:
    """`python -m models.onnx_export`: `main` as that module has always run it (argparse's own exit 2
    on bad usage, 0 after --help)."""
    return main(argv)
