"""What Flower's virtualenv lacks or holds beyond its lock, as JSON (run with the virtualenv's Python).

The lock's environment markers are evaluated for this Python, so a package the lock
names only for another Python or platform is neither wanted nor missing.
"""

import importlib.metadata
import json
import re
import sys
from pathlib import Path

from packaging.markers import Marker

PIN = re.compile(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
TOOLS = {"pip", "setuptools", "wheel"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> int:
    wanted = {}
    for line in Path(lock).read_text(encoding="utf-8").splitlines():
        pin = PIN.match(line)
        if pin and (not pin[3] or Marker(pin[3]).evaluate()):
            wanted[normalized(pin[1])] = pin[2]
    held = {normalized(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    held = {name: version for name, version in held.items() if name not in TOOLS}
    missing = sorted(f"{name}=={version}" for name, version in wanted.items() if held.get(name) != version)
    extra = sorted(name for name in held if name not in wanted)
    print(json.dumps({"wanted": len(wanted), "missing": missing, "extra": extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
