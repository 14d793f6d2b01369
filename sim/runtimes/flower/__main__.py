"""`python -m sim.runtimes.flower --run-dir DIR [python -m sim.run options]`: prepare a run for
a SuperLink and SuperNodes you started yourself, and print the `flwr run` command that runs it.

`--pin-key PARTY=HEX` pins the identity public key that party's node must report (its key
file's public key, as `python -m sim.flower_app.party_host --make-key PATH` prints it).
"""

from __future__ import annotations

import json
import sys

from ...cli import build_parser, config_from_args
from ...config import ConfigError
from .launch import prepare_run
from .settings import APP_DIR


def _pin(text: str) -> tuple[str, bytes]:
    party, sep, hexkey = text.partition("=")
    try:
        key = bytes.fromhex(hexkey)
    except ValueError:
        key = b""
    if not sep or not party or len(key) != 32:
        raise ValueError(f"expected PARTY=HEX with a 32-byte public key in hex, got {text!r}")
    return party, key


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m sim.runtimes.flower"
    parser.description = "Prepare a cdrsim run for a Flower deployment you started yourself."
    parser.add_argument("--run-dir", required=True, help="where the ServerApp writes the run's outputs")
    parser.add_argument("--connection", default="local", help="SuperLink connection name in $FLWR_HOME/config.toml")
    parser.add_argument(
        "--pin-key", type=_pin, action="append", default=[], metavar="PARTY=HEX", help="the identity public key PARTY's node must report"
    )
    args = parser.parse_args(argv)
    if not args.scenario:
        parser.error("--scenario is required")
    args.runtime = "flower-deployment"
    try:
        config = config_from_args(args)
        path = prepare_run(config, args.run_dir, expected_public_keys=dict(args.pin_key))
    except ConfigError as exc:
        parser.error(str(exc))
    print(f"flwr run {APP_DIR} {args.connection} --stream --run-config 'settings={json.dumps(str(path))}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
