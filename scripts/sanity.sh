#!/usr/bin/env bash
# Run `ansible-test sanity` on the project's modules.
#
# ansible-test only validates a collection's plugins/modules/ from inside
# ansible_collections/<ns>/<name>/ of a git work tree with the files committed,
# so library/*.py is staged into a throwaway collection (flowerops.checks) with
# its own git repository, and module_utils/*.py into its plugins/module_utils/.
# The repository's own history is never touched.
#
# ansible-test bootstraps pip in each of its venvs from a get-pip script it
# downloads from a host this machine cannot reach; it first looks in its cache,
# so a stand-in there bootstraps pip with ensurepip and installs what was asked
# from PyPI instead.
#
# Usage: bash scripts/sanity.sh [extra ansible-test sanity arguments]
# Needs ansible-test (ansible-core) and git on PATH, e.g. PATH=.venv/bin:$PATH.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python_version=${SANITY_PYTHON:-3.11}

command -v ansible-test >/dev/null || { echo "sanity.sh: ansible-test not on PATH (activate .venv)" >&2; exit 2; }
command -v git >/dev/null || { echo "sanity.sh: git is needed" >&2; exit 2; }

shopt -s nullglob
modules=("$repo"/library/*.py)
module_utils=("$repo"/module_utils/*.py)
shopt -u nullglob
if [ ${#modules[@]} -eq 0 ]; then
    echo "sanity.sh: no modules in $repo/library" >&2
    exit 2
fi

# --- the offline get-pip stand-in -------------------------------------------
# ansible-test asks for the pip version in python_requirements.py
# (pip='24.2' -> ~/.ansible/test/cache/get_pip_24_2.py).
pip_version=$(python3 - "$(command -v ansible-test)" <<'EOF'
import pathlib, re, subprocess, sys
# ansible-test's own interpreter knows where its package is.
shebang = pathlib.Path(sys.argv[1]).read_text().splitlines()[0]
interpreter = shebang[2:].strip().split()[0] if shebang.startswith("#!") else sys.executable
location = subprocess.run(
    [interpreter, "-c", "import ansible_test, os; print(os.path.dirname(ansible_test.__file__))"],
    check=True, capture_output=True, text=True,
).stdout.strip()
source = pathlib.Path(location, "_internal", "python_requirements.py").read_text()
match = re.search(r"\bpip='([0-9.]+)'", source)
if not match:
    sys.exit("sanity.sh: cannot find the pip version ansible-test wants")
print(match.group(1))
EOF
)
cache_dir="$HOME/.ansible/test/cache"
get_pip="$cache_dir/get_pip_${pip_version//./_}.py"
marker="# flowerops get-pip stand-in"
if [ ! -e "$get_pip" ] || head -n 1 "$get_pip" | grep -qF "$marker"; then
    mkdir -p "$cache_dir"
    cat >"$get_pip.tmp" <<EOF
$marker
"""Offline stand-in for get-pip.py: ansible-test runs it as __main__ with pip's arguments."""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
# ansible-test clears the environment, so the machine's CA settings for pip are lost: pass the bundle.
cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
options = ["--cert", cert] if os.path.exists(cert) else []
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + options + args))
EOF
    mv "$get_pip.tmp" "$get_pip"
fi

# --- the throwaway collection ------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
collection="$work/ansible_collections/flowerops/checks"
mkdir -p "$collection/plugins/modules" "$collection/plugins/module_utils" "$collection/meta"
cp "${modules[@]}" "$collection/plugins/modules/"
if [ ${#module_utils[@]} -gt 0 ]; then
    cp "${module_utils[@]}" "$collection/plugins/module_utils/"
    # The project's modules import shared code as ansible.module_utils.<name>,
    # which Ansible resolves through ansible.cfg's module_utils = module_utils.
    # ansible-test only validates the collection layout, where that code lives
    # at ansible_collections.flowerops.checks.plugins.module_utils.<name>:
    # rewrite those imports in the staged copies only.
    for util in "${module_utils[@]}"; do
        name=$(basename "$util" .py)
        sed -i "s/\bansible\.module_utils\.$name\b/ansible_collections.flowerops.checks.plugins.module_utils.$name/g" \
            "$collection"/plugins/modules/*.py "$collection"/plugins/module_utils/*.py
    done
fi
cat >"$collection/galaxy.yml" <<'EOF'
namespace: flowerops
name: checks
version: 1.0.0
readme: README.md
authors:
  - flowerops contributors
EOF
cat >"$collection/meta/runtime.yml" <<'EOF'
---
requires_ansible: ">=2.16.0"
EOF
echo "# flowerops.checks (staged for ansible-test sanity)" >"$collection/README.md"

git -C "$collection" init -q
git -C "$collection" add -A
git -C "$collection" -c user.name=sanity -c user.email=sanity@localhost -c commit.gpgsign=false \
    commit -q -m "stage modules for ansible-test sanity"

cd "$collection"
echo "sanity.sh: ansible-test sanity --python $python_version on ${#modules[@]} module(s), ${#module_utils[@]} module_utils file(s)"
ansible-test sanity --python "$python_version" --color no "$@"

# Modules run on the targets' Python (3.8 and later for ansible-core 2.19), so
# also compile them with every other such Python this machine has. pyenv shims
# only answer for the active version: link the real interpreters instead.
bindir="$work/bin"
mkdir -p "$bindir"
others=()
for version in 3.8 3.9 3.10 3.11 3.12 3.13 3.14; do
    [ "$version" = "$python_version" ] && continue
    candidates=()
    if command -v pyenv >/dev/null; then
        for candidate in "$(pyenv root)"/versions/"$version".*/bin/python"$version"; do
            candidates+=("$candidate")
        done
    fi
    candidates+=("/usr/bin/python$version" "/usr/local/bin/python$version")
    for candidate in "${candidates[@]}"; do
        if [ -x "$candidate" ] && "$candidate" -c '' 2>/dev/null; then
            ln -s "$candidate" "$bindir/python$version"
            others+=("$version")
            break
        fi
    done
done
for version in "${others[@]}"; do
    PATH="$bindir:$PATH" ansible-test sanity --test compile --python "$version" --color no
done
echo "sanity.sh: passed (compile also on: ${others[*]:-no other Python found})"
