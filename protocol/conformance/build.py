"""Build every vector file, check it replays, and write or compare it (the CLI's engine)."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from .codec_cases import codec_vectors
from .plaintext_cases import plaintext_vectors
from .runner import replay
from .secure_cases import secure_vectors
from .writer import GENERATOR

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
FILES = ("codec.json", "endpoint_plaintext.json", "endpoint_secure.json")


def build_all() -> dict[str, dict[str, Any]]:
    return {"codec.json": codec_vectors(), "endpoint_plaintext.json": plaintext_vectors(), "endpoint_secure.json": secure_vectors()}


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=GENERATOR, description="Generate (or --check) the golden vectors of protocol/vectors/.")
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="directory (default: protocol/vectors)")
    args = parser.parse_args(argv)
    documents = build_all()
    stale = []
    for name, document in documents.items():
        n = replay(copy.deepcopy(document))  # self-check: what was generated must replay
        path = args.out / name
        text = dump(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"{name}: {n} tests{' (stale)' if name in stale else ''}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {GENERATOR}", file=sys.stderr)
        return 1
    return 0
