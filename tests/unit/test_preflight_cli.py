"""Preflight from the command line: typed inputs given as `-e key=value` or JSON, and refusals that name what to fix.

`-e key=value` hands Ansible strings ("15000", "false"); an argument spec checks that they convert, but does not
convert the variable, so a role that compares or tests the raw value breaks (`'>' not supported between
'_AnsibleTaggedStr' and 'int'`) or, worse, takes "false" for true. The cases come from the argument specs: every
int, float and bool input of the roles preflight validates, at the value the Molecule scenario deploys (its
group_vars, else the role's default), is passed on the command line at once, as strings and then as JSON, to
preflight alone (it never connects to a host, so this takes seconds). Molecule's
test_ansible_runs.py::test_configuration_from_command_line_strings_changes_nothing re-runs the configuration with the
same strings on the converged host and proves nothing changes.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MOLECULE = yaml.safe_load((ROOT / "molecule" / "default" / "molecule.yml").read_text())
GROUP_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]
# The roles playbooks/preflight.yml validates: the production ones.
ROLES = re.findall(r"role: (\w+),", (ROOT / "playbooks" / "preflight.yml").read_text())
# Values the issue saw refused from the command line although valid.
SEEN_REFUSED = {"flower_max_tasks": 15000, "flower_backup_keep_count": 10, "flower_proxy_burst_api": 30}


def typed_inputs() -> dict[str, Any]:
    """Every int/float/bool input of the preflight roles, at the value the Molecule scenario deploys."""
    values: dict[str, Any] = {}
    for role in ROLES:
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
        for spec in specs["argument_specs"].values():
            for name, option in spec.get("options", {}).items():
                if option.get("type") not in ("int", "float", "bool"):
                    continue
                value = GROUP_VARS.get(name, defaults.get(name))
                if isinstance(value, str):  # follows another setting ("{{ ... }}"): the inventory's test covers it
                    continue
                values[name] = SEEN_REFUSED.get(name, value)
    return values


TYPED = typed_inputs()


def as_text(value: Any) -> str:
    """What an operator types after `-e name=`: true/false for booleans."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def preflight(
    tmp_path: Path, *extra: str, group_vars: dict[str, Any] | None = None, hosts: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    hosts = hosts or {"all": {"children": {g: {"hosts": {"target": None}} for g in ("flower", "flower_monitoring")}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(GROUP_VARS if group_vars is None else group_vars))
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    for name, sub in (("ANSIBLE_ROLES_PATH", "roles"), ("ANSIBLE_LIBRARY", "library")):
        env.setdefault(name, str(ROOT / sub))
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "playbooks/preflight.yml", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def refusal(output: str) -> str:
    """The run's refusal, from its first "fatal: " (or a loop item's "failed: ") on, with the YAML callback's line
    folding undone."""
    start = min(i for i in (output.find("fatal: "), output.find("failed: [")) if i >= 0)
    return " ".join(output[start:].split())


def test_the_cases_cover_every_typed_input_the_issue_saw_refused() -> None:
    assert set(SEEN_REFUSED) <= set(TYPED)
    assert {type(v) for v in TYPED.values()} == {int, float, bool}


@pytest.mark.parametrize("form", ["key=value", "json"])
def test_preflight_takes_every_typed_input_from_the_command_line(tmp_path: Path, form: str) -> None:
    if form == "key=value":
        extra = [arg for name, value in TYPED.items() for arg in ("-e", f"{name}={as_text(value)}")]
    else:
        extra = ["-e", json.dumps(TYPED)]
    run = preflight(tmp_path, *extra)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "failed=0" in output, output[-3000:]


def test_an_out_of_range_value_from_the_command_line_is_refused_by_name(tmp_path: Path) -> None:
    run = preflight(tmp_path, "-e", "flower_proxy_burst_api=-1")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "flower_proxy_burst_api" in output, output[-3000:]
    assert "not supported between" not in output, output[-3000:]


def test_a_relative_broker_ca_bundle_is_refused_by_name_without_the_broker_url(tmp_path: Path) -> None:
    """A rediss:// broker is verified against flower_broker_ca_file on the Flower host: a relative path would be
    Flower's working directory's, so it is refused, and the secret URL beside it is not printed."""
    url = "rediss://:preflight-broker-pw-5d1c@broker.example:6379/0"
    run = preflight(tmp_path, "-e", json.dumps({"flower_broker_url": url, "flower_broker_ca_file": "broker-ca.crt"}))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    failure = output[output.index("fatal: ") :]
    assert "flower_broker_ca_file must be an absolute path" in failure, output[-3000:]
    assert "preflight-broker-pw" not in output


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GROUP_VARS.items() if k != key}


# Bad input refused by preflight, naming the setting (Molecule's test_ansible_runs.py runs a few more against the
# converged host, proving a refused run leaves it as it was). Each expected text is the refusal's own (a task's
# banner, always printed, would match whatever happened).
BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "unknown state": ({**GROUP_VARS, "flower_service_state": "runing"}, "flower_service_state"),
    "missing secret": (without("flower_broker_url"), "flower_broker_url"),
    "prefix without slash": ({**GROUP_VARS, "flower_url_prefix": "flower"}, "flower_url_prefix"),
    "login without a password": ({**GROUP_VARS, "flower_users": [{"name": "admin", "role": "admin"}]}, "flower_users"),
    "non-ASCII password": (
        {**GROUP_VARS, "flower_users": [{"name": "admin", "password": "pässwörd-1234", "role": "admin"}]},
        "flower_users[0] ('admin'): the password must be printable ASCII",
    ),
    # Flower's own basic auth has no read-only login: a viewer there could act.
    "viewer in basic mode": ({**GROUP_VARS, "flower_auth_mode": "basic"}, "only admins"),
    # The old names are refused with the new ones named, not silently ignored.
    "old login format": ({**GROUP_VARS, "flower_basic_auth": ["admin:password-1234"]}, "flower_users"),
    "old scrape setting": ({**GROUP_VARS, "flower_monitoring_scrape": False}, "flower_proxy_scrape"),
    "max_tasks over MemoryMax": ({**GROUP_VARS, "flower_max_tasks": 100000}, "flower_memory_max"),
    "no admin login": (
        {**GROUP_VARS, "flower_users": [{"name": "ro", "password": "viewer-only-pw-123", "role": "viewer"}]},
        "flower_users",
    ),
    "OAuth pattern Flower refuses": (
        {
            **GROUP_VARS,
            "flower_auth_mode": "oauth",
            "flower_oauth2_provider": "github",
            "flower_oauth2_key": "id",
            "flower_oauth2_secret": "oauth-secret-value",
            "flower_oauth2_emails": "*@*.example.com",
        },
        "flower_oauth2_emails",
    ),
    # Flower widens only ".*": this one would match nobody (the documented form before 2.2's rule was read).
    "OAuth pattern that matches nobody": (
        {
            **GROUP_VARS,
            "flower_auth_mode": "oauth",
            "flower_oauth2_provider": "github",
            "flower_oauth2_key": "id",
            "flower_oauth2_secret": "oauth-secret-value",
            "flower_oauth2_emails": "*@example.com",
        },
        "flower_oauth2_emails",
    ),
    "unknown TLS profile": ({**GROUP_VARS, "flower_proxy_tls_profile": "old"}, "flower_proxy_tls_profile"),
    # Flower's unit could not reach it (IPAddressAllow=): Flower would start blind.
    "broker address outside the unit's allow list": (
        {
            **GROUP_VARS,
            "flower_broker_url": "redis://:pw-1234@192.0.2.30:6379/0",
            "flower_ip_address_allow": ["localhost", "192.0.2.0/28"],
        },
        "flower_broker_url points at a remote host (192.0.2.30) that flower_ip_address_allow",
    ),
    # ufw's module splits its command like a shell: the run would fail halfway through the firewall.
    "quote in a firewall rule's comment": (
        {
            **GROUP_VARS,
            "flower_firewall_extra_rules": [
                {"rule": "allow", "port": "8443", "proto": "tcp", "from_ip": "192.0.2.5/32", "comment": "Flower's gate"}
            ],
        },
        "a comment may not hold a quote",
    ),
    "gate without its clients' CA": (
        {**GROUP_VARS, "flower_proxy_gate_listen": "192.0.2.10:8443"},
        "with flower_proxy_gate_client_ca the absolute path of its clients' CA",
    ),
    "a Flower host as its own front door": (
        {
            **GROUP_VARS,
            "flower_proxy_upstream_hosts": ["target"],
            "flower_proxy_upstream_client_certificate": "/etc/ssl/door/client.crt",
            "flower_proxy_upstream_client_key": "/etc/ssl/door/client.key",
        },
        "must list distinct hosts of the group flower, not be one itself",
    ),
    # The setting before a door could serve several Flower hosts: named, with the new form to write.
    "a front door's Flower host under its old name": (
        {**GROUP_VARS, "flower_proxy_upstream_host": "target"},
        "flower_proxy_upstream_host is now flower_proxy_upstream_hosts, a list",
    ),
    # The old default: the jail would start and never match (nothing there in basic mode).
    "fail2ban on nginx's error log": (
        {**GROUP_VARS, "flower_fail2ban_logpath": "/var/log/nginx/flower/error.log"},
        "flower_fail2ban_logpath must be the login-failed.log flower_proxy writes",
    ),
    # A label value the alerts' summaries would carry as it is.
    "cluster name with a space": ({**GROUP_VARS, "flower_cluster": "orders eu"}, "flower_cluster must be 1 to 63"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_refused_by_preflight_naming_the_setting(tmp_path: Path, case: str) -> None:
    group_vars, expected = BAD_INPUT[case]
    run = preflight(tmp_path, group_vars=group_vars)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    # The YAML callback also doubles quotes inside quotes.
    assert expected in refusal(output).replace("''", "'"), output[-3000:]


def test_a_front_door_before_two_flower_hosts_under_the_same_prefix_is_refused(tmp_path: Path) -> None:
    """One door, two clusters: each Flower host needs a prefix of its own, known from the inventory before any
    host changes."""
    hosts = {
        "all": {
            "children": {
                "flower": {"hosts": {"flower-a": {"flower_url_prefix": "/flower"}, "flower-b": None}},
                "flower_front": {"hosts": {"door": None}},
            }
        }
    }
    door = {
        "flower_proxy_upstream_hosts": ["flower-a", "flower-b"],
        "flower_proxy_upstream_client_certificate": "/etc/ssl/door/client.crt",
        "flower_proxy_upstream_client_key": "/etc/ssl/door/client.key",
    }
    inventory_hosts = hosts["all"]["children"]
    inventory_hosts["flower"]["hosts"]["flower-b"] = {"flower_url_prefix": "/flower"}
    inventory_hosts["flower_front"]["hosts"]["door"] = door
    run = preflight(tmp_path, hosts=hosts)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    expected = 'need distinct URL prefixes (their flower_url_prefix: ["/flower", "/flower"])'
    assert expected in refusal(output), output[-3000:]
    inventory_hosts["flower"]["hosts"]["flower-b"] = {"flower_url_prefix": "/flower-b"}
    run = preflight(tmp_path / "distinct", hosts=hosts)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def one_machine(second: dict[str, Any]) -> dict[str, Any]:
    """Two Flower hosts of the inventory at one address: the machine's first Flower, and a second as given."""
    first = {"ansible_host": "192.0.2.7", "flower_url_prefix": "/flower-a"}
    return {
        "all": {"children": {"flower": {"hosts": {"box": first, "box-b": {"ansible_host": "192.0.2.7", **second}}}}}
    }


@pytest.mark.parametrize(
    ("second", "extra", "expected"),
    [
        # A second instance needs a prefix of its own (the first's server serves both).
        ({"flower_instance": "b"}, [], "a further instance needs a flower_url_prefix of its own"),
        ({"flower_instance": "B-2", "flower_url_prefix": "/flower-b"}, [], "up to 16 lower-case letters and digits"),
        # Two first Flowers of one machine would write the same unit and files.
        ({"flower_url_prefix": "/flower-b"}, [], "exactly one of them must be its first Flower"),
        ({"flower_instance": "b", "flower_url_prefix": "/flower-a"}, [], 'prefixes ["/flower-a", "/flower-a"]'),
        # Converging both at once would race on nginx, apt and ufw.
        (
            {"flower_instance": "b", "flower_url_prefix": "/flower-b"},
            ["-e", "flowerops_rollout_batch=100%"],
            "(flowerops_rollout_batch 100% puts them in one batch)",
        ),
    ],
    ids=["no-prefix", "bad-name", "two-firsts", "same-prefix", "one-batch"],
)
def test_flowers_of_one_machine_are_refused_unless_distinct_and_one_after_another(
    tmp_path: Path, second: dict[str, Any], extra: list[str], expected: str
) -> None:
    run = preflight(tmp_path, *extra, hosts=one_machine(second))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert expected in refusal(output).replace("''", "'"), output[-3000:]


def test_a_gate_or_a_front_door_for_a_second_flower_of_a_machine_is_refused(tmp_path: Path) -> None:
    """The first Flower's nginx serves the second alone: its gate, and a door's sites, are the first's."""
    second = {"flower_instance": "b", "flower_url_prefix": "/flower-b", "flower_proxy_gate_listen": "192.0.2.7:8443"}
    second["flower_proxy_gate_client_ca"] = "/etc/ssl/door/ca.crt"
    run = preflight(tmp_path, hosts=one_machine(second))
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "no flower_proxy_gate_listen on it (got '192.0.2.7:8443' on instance b)" in refusal(output).replace(
        "''", "'"
    )
    hosts = one_machine({"flower_instance": "b", "flower_url_prefix": "/flower-b"})
    hosts["all"]["children"]["flower_front"] = {
        "hosts": {
            "door": {
                "flower_proxy_upstream_hosts": ["box-b"],
                "flower_proxy_upstream_client_certificate": "/etc/ssl/door/client.crt",
                "flower_proxy_upstream_client_key": "/etc/ssl/door/client.key",
            }
        }
    }
    run = preflight(tmp_path / "door", hosts=hosts)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert 'no front door passing to it (flower_proxy_upstream_hosts names ["box-b"])' in refusal(output), output[
        -3000:
    ]


@pytest.mark.parametrize("batch", ["1", "50%"])
def test_a_second_flower_of_a_machine_in_a_batch_of_its_own_passes_preflight(tmp_path: Path, batch: str) -> None:
    second = {"flower_instance": "b", "flower_url_prefix": "/flower-b"}
    run = preflight(tmp_path, "-e", f"flowerops_rollout_batch={batch}", hosts=one_machine(second))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


@pytest.mark.parametrize("allowed", [["localhost", "192.0.2.0/27"], ["192.0.2.30"], ["any"]])
def test_a_broker_address_inside_the_units_allow_list_passes_preflight(tmp_path: Path, allowed: list[str]) -> None:
    group_vars = {**GROUP_VARS, "flower_broker_url": "redis://:pw-1234@192.0.2.30:6379/0"}
    run = preflight(tmp_path, group_vars={**group_vars, "flower_ip_address_allow": allowed})
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


@pytest.mark.parametrize("batch", ["0", "150%", "two"])
def test_a_rollout_batch_that_is_not_a_number_of_hosts_or_a_percentage_is_refused(tmp_path: Path, batch: str) -> None:
    """The Flower play's serial comes from -e flowerops_rollout_batch: Ansible would take 0 for "every host"."""
    run = preflight(tmp_path, "-e", f"flowerops_rollout_batch={batch}")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert (
        f"flowerops_rollout_batch must be a number of hosts (1, 2, ...) or a percentage of them (1% to 100%), "
        f"given with -e (got '{batch}')" in refusal(output)
    ), output[-3000:]


@pytest.mark.parametrize("batch", ["3", "100%"])
def test_a_rollout_batch_of_hosts_or_a_percentage_passes_preflight(tmp_path: Path, batch: str) -> None:
    run = preflight(tmp_path, "-e", f"flowerops_rollout_batch={batch}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def test_a_bad_login_is_refused_naming_the_entry_and_the_rule_and_no_password(tmp_path: Path) -> None:
    users = [
        {"name": "admin", "password": "a-good-password-4711", "role": "admin"},
        {"name": "bob smith", "password": "tiny-pw", "role": "viewer"},
        {"name": "eve", "password": "pässwörd-long-enough", "role": "boss"},
    ]
    run = preflight(tmp_path, "-e", json.dumps({"flower_users": users}))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    for entry, rule in (
        ("flower_users[1] ('bob smith')", "letters, digits"),
        ("flower_users[1] ('bob smith')", "shorter than 12 characters"),
        ("flower_users[2] ('eve')", "printable ASCII"),
        ("flower_users[2] ('eve')", "not 'boss'"),
    ):
        assert f"{entry}: " in output and rule in output, (entry, rule, output[-2000:])
    assert "flower_users[0]" not in output, "a valid entry was reported"
    assert not [user["password"] for user in users if user["password"] in output], "a password reached the output"


def test_a_bad_archive_name_is_refused_under_the_name_the_operator_typed(tmp_path: Path) -> None:
    run = preflight(tmp_path, "-e", "flower_backup_restore_archive=../../etc/passwd")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    failed_task = output[: output.index("fatal: ")].rsplit("TASK [", 1)[-1].split("]", 1)[0]
    assert "credentials" not in failed_task and "archive" in failed_task, failed_task
    assert "flower_backup_restore_archive" in output[output.index("fatal: ") :], output[-3000:]


def test_a_watchdog_that_would_judge_between_two_heartbeats_is_refused_by_name(tmp_path: Path) -> None:
    run = preflight(tmp_path, "-e", "flower_watchdog_blind_after=3")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "flower_watchdog_blind_after 10 to 3600" in refusal(output), output[-3000:]


def provided_certificate(tmp_path: Path, with_aki: bool) -> tuple[Path, Path]:
    """An operator's CA (with its Subject Key Identifier) and a certificate it issued, with or without the
    Authority Key Identifier; the chain and key files as flower_tls_mode provided takes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator's CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flower.example.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("flower.example.com")]), critical=False)
    )
    if with_aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    chain, private = tmp_path / f"chain-{with_aki}.pem", tmp_path / f"key-{with_aki}.pem"
    chain.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, private


def test_a_provided_certificate_without_authority_key_identifier_is_refused_before_the_host_changes(
    tmp_path: Path,
) -> None:
    """Python 3.13 (Debian 13) refuses it when it verifies ("Missing Authority Key Identifier", seen in the split
    scenario): the health check could never pass. The same certificate with the extension passes preflight."""
    for with_aki in (False, True):
        chain, key = provided_certificate(tmp_path, with_aki)
        settings = {"flower_tls_mode": "provided", "flower_tls_provided_certificate": str(chain)}
        run = preflight(tmp_path / str(with_aki), "-e", json.dumps({**settings, "flower_tls_provided_key": str(key)}))
        output = run.stdout + run.stderr
        if with_aki:
            assert run.returncode == 0, output[-3000:]
        else:
            assert run.returncode != 0
            assert f"{chain}: its first certificate has no Authority Key Identifier" in refusal(output), output[-3000:]
