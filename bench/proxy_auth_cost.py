#!/usr/bin/env python3
"""What a login costs nginx: the time to check one bcrypt hash, per cost (rounds).

nginx's basic auth verifies the stored hash on every request, in the worker's
event loop, so this time is added to each authenticated request (the UI polls
about once a second per open page) and no other request on that worker moves
meanwhile. Prints one row per round count; the flower_proxy role's default is
flower_proxy_bcrypt_rounds in roles/flower_proxy/defaults/main.yml.

    .venv/bin/python bench/proxy_auth_cost.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import bcrypt
import yaml

DEFAULTS = Path(__file__).resolve().parents[1] / "roles" / "flower_proxy" / "defaults" / "main.yml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="checks timed per round count (median shown)")
    args = parser.parse_args()
    default = yaml.safe_load(DEFAULTS.read_text())["flower_proxy_bcrypt_rounds"]
    password = b"a-login-password-of-24ch"
    print(f"{'rounds':>6}  {'ms per request':>14}  {'requests/s per core':>19}")
    for rounds in range(4, 13):
        stored = bcrypt.hashpw(password, bcrypt.gensalt(rounds))
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            bcrypt.checkpw(password, stored)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        mark = "  <- role default" if rounds == default else ""
        print(f"{rounds:>6}  {median * 1000:>14.1f}  {1 / median:>19.0f}{mark}")


if __name__ == "__main__":
    main()
