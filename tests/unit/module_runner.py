"""Run a module of library/ as Ansible would: python module_runner.py MODULE ARGS_FILE.

Ansible ships a module together with the ansible.module_utils files it imports, taking the project's own from
module_utils/ (ansible.cfg: module_utils = module_utils). This runner gives the child Python the same view by
adding that directory to the ansible.module_utils package, then runs the module as __main__, which reads
{"ANSIBLE_MODULE_ARGS": ...} from ARGS_FILE as a module run directly does. conftest.py does the same for the
tests that import module_utils themselves.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

import ansible.module_utils

PROJECT_MODULE_UTILS = Path(__file__).resolve().parents[2] / "module_utils"


def add_project_module_utils() -> None:
    """Make module_utils/<name>.py importable as ansible.module_utils.<name>."""
    if str(PROJECT_MODULE_UTILS) not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(PROJECT_MODULE_UTILS))


def load_file(name: str, path: Path) -> ModuleType:
    """A Python file that is not on the import path (a module of library/, a role's plugin), imported."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    module, args_file = sys.argv[1:3]
    add_project_module_utils()
    sys.argv = [module, args_file]
    runpy.run_path(module, run_name="__main__")


if __name__ == "__main__":
    main()
