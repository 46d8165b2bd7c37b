"""The options of the training commands (train, evaluate, simulate), for ``mlwaf``'s parser.

Their handlers live in ``mlwaf.training.commands`` and are named here, not imported:
``mlwaf`` loads that module only when one of these commands runs.
"""

from __future__ import annotations

import argparse

from mlwaf.config import RUNTIMES

NETWORK_EPOCHS = 12  # mlwaf.training.neural.NetworkSettings.epochs (not imported: TensorFlow loads slowly)
NETWORK_MEMBERS = 2  # mlwaf.training.train.TrainSettings.members
COMMANDS = "mlwaf.training.commands"  # where the handlers named by ``set_defaults(func=...)`` are


def add_commands(sub: argparse._SubParsersAction) -> None:
    """train, evaluate and simulate: the commands that make and judge models."""
    p = sub.add_parser("train", help="train a model from the labelled datasets")
    p.add_argument("kind", choices=("attack", "flood"), help="attack: the injection model; flood: the flood/bot model")
    p.add_argument("--data", required=True, help="datasets folder (the project's shared/datasets)")
    p.add_argument("--out", default="files/models", help="output folder (default files/models)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: attack {NETWORK_EPOCHS}, flood 12)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--members",
        type=int,
        choices=range(1, 4),
        metavar="N",
        help=f"attack: networks averaged, seeds SEED to SEED+N-1 (default {NETWORK_MEMBERS}; 1 to 3)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="JSONL",
        help='operator-labelled values, one {"text": ..., "family": ...} a line (repeatable; training side only)',
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="attack: set the thresholds and rates of the model in --out again from the data, no training",
    )
    p.set_defaults(func="cmd_train")

    p = sub.add_parser(
        "evaluate",
        help="rates of the model and libinjection side by side on the untouched test split",
        description="Per test request and per test value: TPR per attack family, FPR on benign ones, "
        "balanced accuracy; overall and per source; and the model's inference time per request. "
        "Markdown on stdout; with --out also detection.md/.json and two PNG charts.",
    )
    p.add_argument("--data", required=True, help="datasets folder (the project's shared/datasets)")
    p.add_argument("--model", default="files/models/attack.json", help="model metadata (default: the shipped one)")
    p.add_argument("--out", help="folder for detection.md, detection.json and detection.png")
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0], help="which export to run")
    p.add_argument("--no-libinjection", action="store_true", help="evaluate the model alone")
    p.add_argument("--seed", type=int, default=7, help="the training seed (the test split depends on it)")
    p.set_defaults(func="cmd_evaluate")

    p = sub.add_parser(
        "simulate",
        help="generate labelled traffic (normal browsing, floods, scanners, bots, credential stuffing)",
        description="Writes JSON lines in the mlwaf score input format, with client_ip, ts, the status the "
        "site answered, and the scenario as label; or sends them live to a loopback URL (bounded).",
    )
    p.add_argument("scenario", nargs="+", help="normal, flood, distributed, scanner, crawler, headless, stuffing")
    p.add_argument(
        "-n", "--count", type=int, default=100, help="sessions (normal), seconds (floods) or requests (others)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data", help="datasets folder: build the site from CSIC 2010's requests (default: the demo site)")
    p.add_argument("-o", "--output", default="-", help="JSON-lines file (default: stdout)")
    p.add_argument("--url", help="send live to this loopback URL instead (e.g. http://127.0.0.1)")
    p.add_argument("--max-requests", type=int, default=5000, help="live: stop after this many (default 5000)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="live: stop after this long (default 60)")
    p.set_defaults(func="cmd_simulate")
