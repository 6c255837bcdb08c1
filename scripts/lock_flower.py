"""Write the lock of Flower's virtualenv: every package of the closure, pinned, with its hashes.

The flower role installs Flower from this file with pip's hash checking (a package
whose hash is not in the lock is refused), so nothing in the virtualenv floats.
The pins come from the flower role's defaults unless given:

    python scripts/lock_flower.py                      # the defaults' pins
    python scripts/lock_flower.py --flower 2.2.0 --celery 5.7.0 --client redis==8.1.0

The lock lands in roles/flower/files/locks/, named by its pins (the role picks it
by the same name, and preflight refuses pins that have no lock). It is resolved
for every Python from 3.11 and every platform, markers kept (uv's universal mode).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "roles" / "flower" / "files" / "locks"
# The oldest Python a host runs Flower with (Debian 12's 3.11).
MIN_PYTHON = "3.11"


def lock_name(flower: str, celery: str, client: str, client_version: str) -> str:
    """The file name the flower role looks for (roles/flower/vars/main.yml: _flower_lock_name)."""
    return f"flower-{flower}_celery-{celery}_{client}-{client_version}.txt"


def main() -> int:
    defaults = yaml.safe_load((ROOT / "roles" / "flower" / "defaults" / "main.yml").read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flower", default=defaults["flower_version"])
    parser.add_argument("--celery", default=defaults["flower_celery_version"])
    parser.add_argument(
        "--client",
        default=f"{defaults['flower_broker_client']}=={defaults['flower_broker_client_version']}",
        help="broker client package==version",
    )
    args = parser.parse_args()
    client, _, client_version = args.client.partition("==")
    LOCKS.mkdir(parents=True, exist_ok=True)
    output = LOCKS / lock_name(args.flower, args.celery, client, client_version)
    with tempfile.TemporaryDirectory() as tmp:
        wanted = Path(tmp) / "requirements.in"
        wanted.write_text(f"flower=={args.flower}\ncelery[{client}]=={args.celery}\n{client}=={client_version}\n")
        # uv resolves for every Python and platform at once (--universal): a package needed only
        # by some (async-timeout on Python < 3.11.3, Debian 12's 3.11.2) carries its marker, so
        # one lock serves Debian 12 and 13 hosts alike; every file of every release gets its hash.
        subprocess.run(
            [
                str(Path(sys.executable).with_name("uv")),
                "pip",
                "compile",
                "--quiet",
                "--universal",
                "--python-version",
                MIN_PYTHON,
                "--generate-hashes",
                "--no-header",
                "--output-file",
                str(output),
                wanted.name,
            ],
            check=True,
            cwd=tmp,
        )
    text = output.read_text()
    pins = f"{args.flower}, celery {args.celery}, {client} {client_version}"
    header = f"# Flower's virtualenv, locked with hashes by scripts/lock_flower.py ({pins}).\n"
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    output.write_text(header + body.strip("\n") + "\n")
    print(output.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
