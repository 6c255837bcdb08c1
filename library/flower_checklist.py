#!/usr/bin/python

# Copyright: (c) 2026, flowerops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# validate-modules requires DOCUMENTATION, EXAMPLES and RETURN above every import but __future__.
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flower_checklist
short_description: Audit a Flower host against the 16-item production checklist
version_added: "1.0.0"
description:
  - Observes the live host (systemd, the firewall, logrotate, the backup's status file, Flower's configuration in
    force) and its front door (nginx, over its local Unix socket) and judges each item of the production checklist
    C(PASS), C(FAIL) or C(WAIVED), with the evidence it saw.
  - Read-only; never changes anything, so it reports C(changed=false) and behaves the same in check mode. The one
    load it puts on the host is item 14's bounded burst of unauthenticated requests, which stops at the first
    HTTP 429 or after O(burst_max) requests.
  - The module does not fail when items fail, so that the caller can write its reports first; RV(failed_items)
    lists them. It fails only on bad arguments.
  - Items that need what only another host or the caller can see take it as arguments, already observed - the
    flower_health module's result (O(health)) and what the monitoring host's Prometheus reports (O(monitoring)).
  - Figures and paths other roles own are received, never restated here - the ports no rule may open
    (O(forbidden_ports)), the flower role's memory need (O(memory_need_bytes)), the backup's status file
    (O(backup_status_file)). Items 8 and 11 fail, saying so, when theirs are not given.
author:
  - flowerops contributors (@flowerops)
options:
  url:
    description:
      - Public base URL of Flower behind nginx, prefix included, for example C(https://flower.example.com/flower).
    type: str
    required: true
  unix_socket:
    description:
      - nginx's local HTTPS listener on this host; requests go there, with the host of O(url) as the TLS server
        name and C(Host) header. Without it, requests go to O(url) itself.
    type: path
  ca_path:
    description:
      - PEM file of CA certificates to verify nginx's certificate with, instead of the system's.
    type: path
  timeout:
    description:
      - Seconds to wait for each request and each command.
    type: float
    default: 10
  cert_min_days:
    description:
      - Item 2 fails when the served certificate expires in fewer days.
    type: int
    default: 14
  health:
    description:
      - The result of the flower_health module run through the same front door (its C(checks) are used as
        evidence for items 2 and 3). Optional.
    type: dict
    default: {}
  service:
    description:
      - Flower's systemd unit.
    type: str
    default: flower.service
  forbidden_ports:
    description:
      - TCP ports no firewall rule may open (item 4), besides every port Flower itself listens on, which item 4
        always adds. The firewall role's list (C(flower_firewall_forbidden_ports)); required, so that a list
        restated here cannot drift from it. May be empty.
    type: list
    elements: int
    required: true
  managed_marker:
    description:
      - The word the firewall role's ufw comments start with (its C(_flower_firewall_marker)). Item 4 fails when a
        rule without it opens a port such marked rules open (a managed port) to sources they do not admit, for
        example 443 from Anywhere while the managed rules allow 443 from a /24 only.
    type: str
    default: flowerops
  memory_need_bytes:
    description:
      - Bytes Flower needs at the peak of a state save (item 8), as the flower role computed it for the
        C(max_tasks) it deployed (O(memory_need_max_tasks)); it must fit the unit's C(MemoryMax). The rule behind
        the figure lives in the flower role alone.
      - Absent or 0 - item 8 fails, saying the figure was not given.
    type: int
  memory_need_max_tasks:
    description:
      - The C(max_tasks) O(memory_need_bytes) was computed for. Item 8 fails when Flower runs with another
        C(max_tasks) (the figure is stale - run site.yml). Absent or 0 - item 8 fails.
    type: int
  backup_timer:
    description:
      - The backup's systemd timer (item 11); it must be active, and the backup's last run must have finished
        less than twice its calendar's interval ago.
    type: str
    default: flower-backup.timer
  backup_status_file:
    description:
      - The status file each backup run writes (item 11) - the flower_backup role's C(status_file) setting. Item
        11 reads only this file and the timer; it fails when the file is missing, unreadable, says the run failed
        or its archive was not verified, or is older than twice the timer's interval. Absent - item 11 fails.
    type: path
  logrotate_files:
    description:
      - logrotate files that must be valid (item 12), checked with C(logrotate --debug).
    type: list
    elements: path
    default: []
  logrotate_timer:
    description:
      - The timer that runs logrotate (item 12); it must be active, and the last run of the unit it starts must
        not have failed.
    type: str
    default: logrotate.timer
  headers:
    description:
      - Response headers that must be on every answer (item 13).
    type: list
    elements: str
    default:
      - Strict-Transport-Security
      - X-Content-Type-Options
      - X-Frame-Options
      - Referrer-Policy
      - Content-Security-Policy
      - Permissions-Policy
  burst_max:
    description:
      - Item 14 sends at most this many unauthenticated requests to C(<url>/api/workers), one after the other,
        and passes at the first HTTP 429.
    type: int
    default: 100
  monitoring:
    description:
      - What the monitoring host saw (item 9 and 10), gathered by the caller there.
      - C(host) - its name. C(targets) - Prometheus' active targets (C(/api/v1/targets) C(data.activeTargets)).
        C(rules_file) - the alert rule file's path; C(rules_file_exists) - whether it is there;
        C(rules_check_rc) and C(rules_check_output) - C(promtool check rules) on it; C(rule_groups) - the names of
        the rule groups Prometheus has loaded.
    type: dict
    default: {}
  instance:
    description:
      - This host's name in Prometheus' C(instance) label (item 9 finds the host's target by it, by its public
        name, or by its address), for a target scraped at an address rather than the public name.
    type: str
    default: ""
  external_prometheus:
    description:
      - Declares that a Prometheus outside this project scrapes the host (item 9); the text names it and is the
        evidence. Item 10 then needs a waiver saying where the rules live.
    type: str
    default: ""
  runbook:
    description:
      - The operator runbook installed on the host (item 15); it carries a line C(Last reviewed - YYYY-MM-DD),
        and names O(url), the configuration file Flower runs with and the directory of its database.
    type: path
    default: /usr/local/share/doc/flowerops/runbook.md
  runbook_max_age_days:
    description:
      - Item 15 fails when the runbook's last review is older than this many days.
    type: int
    default: 180
  users:
    description:
      - Logins to test (item 16); each must be let in, and each C(viewer) must be refused a write.
      - Empty when nobody can log in with a password (OAuth); item 16 then fails unless waived.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      password:
        description: Password.
        type: str
        required: true
      role:
        description: C(admin) or C(viewer).
        type: str
        choices: [admin, viewer]
        default: admin
  waivers:
    description:
      - Items not to fail, by number, each with the reason the report shows (mandatory). A waived item is still
        observed and its evidence reported.
    type: dict
    default: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Runs as root - it reads C(ufw status), C(/proc) of Flower's process and Flower's database, and connects to
    nginx's root-only local socket.
  - Each item's observation, in short - 1 anonymous requests refused; 2 certificate verified for the name, days
    left, HTTP redirects to HTTPS; 3 Flower's process listens only on loopback or a Unix socket, and answers
    through nginx; 4 ufw active, default deny incoming, no rule for a forbidden port, no managed port open wider than
    its managed rules; 5 unit enabled and active;
    6 the unit's cgroup has a memory and CPU limit; 7 C(persistent) on in the configuration Flower runs with,
    its database opens with Flower's Python, and (with C(state_save_interval)) its last save is at most two
    intervals old once Flower has run that long; 8 C(max_tasks) set, equal to O(memory_need_max_tasks),
    O(memory_need_bytes) fits C(MemoryMax), and Flower's configuration file not changed since it started (the
    tasks it holds are evidence); 9 Flower's metrics answer, and Prometheus scrapes this host (target
    up) or an external one is declared; 10 rule file present, C(promtool check rules) passes, and Prometheus
    loaded it; 11 timer active, its service's last run not failed, and the backup's status file says its last run
    succeeded with a verified archive less than twice the timer's interval ago; 12 logrotate files valid,
    logrotate's timer active and its last run not failed; 13 header set on a refused and on an admitted answer;
    14 a burst gets HTTP 429; 15 runbook present, reviewed recently, and naming this
    host's URL, Flower's configuration file and its state's directory; 16 every user logs in,
    every viewer is refused a write, and a wrong password is refused.
requirements:
  - ufw, logrotate, systemd, iproute2 (C(ss)) on the host
"""

EXAMPLES = r"""
- name: Audit this Flower host
  flower_checklist:
    url: https://flower.example.com
    unix_socket: /run/flower-proxy/https.sock
    health: "{{ flower_health_result }}"
    forbidden_ports: [5555, 6379]
    memory_need_bytes: 183500800
    memory_need_max_tasks: 10000
    backup_status_file: /var/backups/flower/status.json
    logrotate_files: [/etc/logrotate.d/flower, /etc/logrotate.d/flower-nginx]
    users: "{{ flower_proxy_users }}"
    waivers:
      "15": "Runbook review scheduled for the 3rd; ticket OPS-123"
  register: checklist
  no_log: true  # the users' passwords
"""

RETURN = r"""
items:
  description: The 16 items, in order.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Item number, 1 to 16.
      type: int
      returned: always
    name:
      description: The checklist's wording.
      type: str
      returned: always
    status:
      description: C(PASS), C(FAIL), or C(WAIVED) (whatever was observed).
      type: str
      returned: always
    evidence:
      description:
        - What was observed, on one line, for an operator - sizes in binary units, times in UTC with their age,
          summaries of the files and outputs read. Text quoted from a command is cut between words, marked with an
          ellipsis, when it is long.
      type: str
      returned: always
    waiver:
      description: The waiver's reason; empty unless waived.
      type: str
      returned: always
  sample:
    - id: 5
      name: systemd service installed and enabled
      status: PASS
      evidence: flower.service enabled, active (running)
      waiver: ""
failed_items:
  description: Numbers of the items that failed (waived items are not listed).
  returned: always
  type: list
  elements: int
  sample: [4, 11]
passed:
  description: Whether no item failed.
  returned: always
  type: bool
"""

import ast
import errno
import ipaddress
import json
import os
import re
import ssl
import stat
import time
from datetime import date, datetime, timezone
from typing import Callable, NamedTuple, Union
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.flower_probe import (
    FetchError,
    FlowerClient,
    refused_without_credentials,
    tls_days_left,
    url_problem,
)

PASS = "PASS"
FAIL = "FAIL"
WAIVED = "WAIVED"

NAMES = {
    1: "Authentication enabled",
    2: "HTTPS configured",
    3: "Reverse proxy in front",
    4: "Firewall rules configured",
    5: "systemd service installed and enabled",
    6: "Resource limits set",
    7: "Database persistence enabled",
    8: "Task retention limit configured",
    9: "Monitoring integrated (Prometheus)",
    10: "Alerting rules configured",
    11: "Backup strategy for flower.db",
    12: "Log rotation configured",
    13: "Security headers enabled",
    14: "Rate limiting configured",
    15: "Documentation updated",
    16: "Team access tested",
}
# A task name no worker has: a write that reaches Flower gets 404 "Unknown task" and changes nothing.
# Item 16's wrong password (never anybody's: it names itself).
WRONG_PASSWORD = "flowerops-checklist-wrong-password"
HARMLESS_WRITE = "/api/task/async-apply/flowerops.checklist.no-such-task"
# Flower's task table (the Tasks page's data): its recordsTotal is the number of tasks Flower holds.
TASK_TABLE = "/tasks/datatable?draw=1&start=0&length=1&order%5B0%5D%5Bcolumn%5D=0&columns%5B0%5D%5Bdata%5D=name"
REVIEWED = re.compile(r"Last reviewed:\s*(\d{4}-\d{2}-\d{2})")
# The layout of the backup's status file this audit reads (flower_backup.py's STATUS_SCHEMA).
BACKUP_STATUS_SCHEMA = 1
# Item 7, run with Flower's own Python: which dbm backend the database is, and its keys (never its values: they
# are pickles the flower user writes, and this runs as root). dbm.whichdb knows which files make up a database of
# each backend, so this module keeps no list of dbm file suffixes (the backup tool, which copies the files, keeps
# the only one).
# Python 3.13 (Debian 13) creates new databases with dbm.sqlite3, in WAL mode: opened read-only through dbm, SQLite
# needs to create a -shm file beside it, which a read-only sandbox (the watcher's) refuses. Flower never writes the
# file in place (it saves to PATH.tmp and renames), so it is opened immutable, with SQLite alone.
DBM_PROBE = """import contextlib, dbm, json, os, sqlite3, sys, urllib.parse
kind = dbm.whichdb(sys.argv[1])
if not kind:
    raise SystemExit("no database" if kind is None else "not a database of any dbm backend")
if kind == "dbm.sqlite3":
    uri = "file:" + urllib.parse.quote(os.path.abspath(sys.argv[1])) + "?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as cx:
        keys = [key for (key,) in cx.execute("SELECT key FROM Dict")]
else:
    with dbm.open(sys.argv[1], "r") as db:
        keys = db.keys()
print(kind, json.dumps(sorted(bytes(key).decode(errors="replace") for key in keys)))
"""
# The keys of the state Flower saves (flower.events.Events.save_state): its EventsState, and its event counter.
FLOWER_STATE_KEYS = ("events", "counter")
# Evidence is read by an operator on a console table and in the reports: text quoted from a command or a file
# is cut (at a word, marked with an ellipsis) to SNIPPET characters, a whole item's evidence to MAX_EVIDENCE.
SNIPPET = 240
# Item 7: how much longer than two save intervals Flower's last save may be, for the save itself.
SAVE_SLACK_S = 5
MAX_EVIDENCE = 600


# Seconds a request answered 429 outside the burst is tried again: the audit of another Flower on the same
# machine (the same nginx, the same limit key for its local socket) may have just spent the allowance.
LIMITED_WAIT = 15.0


class Verdict(NamedTuple):
    ok: bool
    evidence: str


class Audit:
    """The observations behind the items; each item_N method returns a Verdict."""

    cgroup_root = "/sys/fs/cgroup"  # where item 6 reads the limits the kernel enforces on the unit

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.client = self.make_client()
        self.unit = self.systemctl_show(
            self.params["service"],
            "UnitFileState ActiveState SubState MainPID ControlGroup MemoryMax MemoryCurrent CPUQuotaPerSecUSec "
            "ExecMainStartTimestampMonotonic",
        )
        self.pid = int(self.unit.get("MainPID") or 0)
        self.cwd = self.process_cwd()
        self.config = self.flower_config()
        self.listening = self.listeners()  # items 3 and 4

    # --- helpers ---

    def process_cwd(self) -> str:
        """Flower's working directory (its relative paths start there); "/" when it has no process (any more)."""
        try:
            return os.readlink(f"/proc/{self.pid}/cwd") if self.pid else "/"
        except OSError:
            return "/"

    def first_admin(self) -> dict[str, str] | None:
        """The first login with the admin role (items 8 and 13 read what only a login sees), if any."""
        return next((user for user in self.params["users"] if user["role"] == "admin"), None)

    def make_client(
        self, username: str | None = None, password: str | None = None, wait_when_limited: float = LIMITED_WAIT
    ) -> FlowerClient:
        return FlowerClient(
            self.params["url"],
            username=username,
            password=password,
            timeout=self.params["timeout"],
            ca_path=self.params["ca_path"],
            unix_socket=self.params["unix_socket"],
            agent="flowerops-flower_checklist",
            wait_when_limited=wait_when_limited,
        )

    def run(self, argv: list[str]) -> tuple[int, str]:
        """A command's exit status and output; 127 when it is not installed (the item then fails, saying so)."""
        if not os.path.isabs(argv[0]) and not self.module.get_bin_path(argv[0]):
            return 127, f"{argv[0]} is not installed"
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        return rc, (out + err).strip()

    def systemctl_show(self, unit: str, properties: str) -> dict[str, str]:
        rc, out = self.run(["systemctl", "show", unit, "--property=" + ",".join(properties.split())])
        if rc != 0:
            return {}
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cmdline(self) -> list[str]:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as handle:
                return [arg.decode() for arg in handle.read().split(b"\0") if arg]
        except OSError:
            return []

    def flower_config(self) -> dict[str, object]:
        """Flower's options in force: its --conf file's literal assignments, then its command-line options."""
        argv = self.cmdline()
        options: dict[str, object] = {}
        conf = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--conf=")), "")
        if conf:
            options["_conf"] = os.path.join(self.cwd, conf)
            options.update(_literal_assignments(str(options["_conf"])))
        for arg in argv:
            if arg.startswith("--") and "=" in arg:
                key, value = arg[2:].split("=", 1)
                options[key] = value
        options["_argv"] = argv
        return options

    def listeners(self) -> list[str]:
        """Local addresses Flower's process listens on: TCP host:port, and Unix socket paths."""
        rc, out = self.run(["ss", "-Hlnp"])
        if rc != 0 or not self.pid:
            return []
        # netid state recv-q send-q local-address peer-address users:(("name",pid=N,fd=N))
        return [line.split()[4] for line in out.splitlines() if f"pid={self.pid}," in line and len(line.split()) > 4]

    # --- the items ---

    def item_1(self) -> Verdict:
        prefix_paths = ("/", "/api/workers", "/workers?json=1")
        ok, detail = refused_without_credentials(self.client, prefix_paths)
        return Verdict(ok, detail)

    def item_2(self) -> Verdict:
        parts = urlsplit(self.params["url"])
        if parts.scheme != "https":
            return Verdict(False, f"{self.params['url']} is not HTTPS")
        problems, seen = [], []
        try:
            reply = self.client.get("/healthcheck", authenticated=False)
            seen.append(f"certificate verified for {parts.hostname} (HTTP {reply.status})")
        except FetchError as exc:
            problems.append(str(exc))
        try:
            days = tls_days_left(self.params["url"], self.params["timeout"], self.params["unix_socket"])
            line = f"expires in {days} days (min {self.params['cert_min_days']})"
            (seen if days >= self.params["cert_min_days"] else problems).append(line)
        except FetchError as exc:
            problems.append(str(exc))
        redirects, redirect = self.http_redirect(parts.hostname or "")
        (seen if redirects else problems).append(redirect)
        return Verdict(not problems, "; ".join(problems + seen))

    def http_redirect(self, hostname: str) -> tuple[bool, str]:
        """Port 80 on loopback with the public name: it must send the browser to https://."""
        plain = FlowerClient(f"http://127.0.0.1{urlsplit(self.params['url']).path}", timeout=self.params["timeout"])
        try:
            reply = plain.request("GET", "/", authenticated=False, headers={"Host": hostname})
        except FetchError as exc:
            return False, f"port 80: {exc}"
        location = reply.header("Location") or ""
        if reply.status in (301, 308) and location.startswith("https://"):
            return True, f"HTTP redirects to HTTPS ({reply.status} {location})"
        return False, f"port 80 answered {reply.describe()}, not a redirect to https://"

    def item_3(self) -> Verdict:
        if self.pid == 0:
            return Verdict(False, f"{self.params['service']} has no running process")
        listening = self.listening
        exposed = [address for address in listening if not _local_only(address)]
        problems = [f"Flower listens on {', '.join(exposed)}"] if exposed else []
        try:
            reply = self.client.get("/healthcheck", authenticated=False)
            through = f"nginx answers /healthcheck with HTTP {reply.status}"
            if reply.status != 200 or reply.text().strip() != "OK":
                problems.append(through)
        except FetchError as exc:
            problems.append(str(exc))
            through = ""
        health = [c for c in self.params["health"].get("checks", []) if c.get("name") in ("healthcheck", "api")]
        for check in health:
            if not check.get("ok"):
                problems.append(f"flower_health {check['name']}: {_shorten(check.get('detail'))}")
        seen = [f"Flower listens only on {', '.join(listening) or 'nothing'}", through]
        seen += [f"flower_health {c['name']}: {_shorten(c.get('detail'))}" for c in health if c.get("ok")]
        return Verdict(not problems, "; ".join(problems + [s for s in seen if s]))

    def item_4(self) -> Verdict:
        rc, out = self.run(["ufw", "status", "verbose"])
        if rc != 0:
            return Verdict(False, f"ufw status: {_last_line(out) or 'failed'}")
        problems = []
        if "Status: active" not in out:
            problems.append("ufw is not active")
        default = next((line for line in out.splitlines() if line.startswith("Default:")), "Default: ?")
        if "deny (incoming)" not in default and "reject (incoming)" not in default:
            problems.append(f"incoming is not denied by default ({default})")
        ports = set(self.params["forbidden_ports"]) | {_port(a) for a in self.listening if _port(a)}
        rules = [rule for rule in map(_ufw_rule, out.splitlines()) if rule]
        for rule in rules:
            if rule.admits and (rule.ports is None or rule.ports & ports):
                problems.append(f"a rule opens a forbidden port: {rule.text}")
        marker = self.params["managed_marker"]
        problems += _wider_than_managed(rules, marker)
        managed = sorted({port for rule in rules if _managed(rule, marker) for port in rule.ports or ()})
        defaults = default.split(":", 1)[-1].strip()
        seen = (
            f"ufw active, {defaults}; no rule opens {', '.join(str(p) for p in sorted(ports))}; "
            f"no rule opens a managed port ({', '.join(map(str, managed)) or 'none'}) wider than its {marker} rules"
        )
        return Verdict(not problems, "; ".join(problems) if problems else seen)

    def item_5(self) -> Verdict:
        if not self.unit:
            return Verdict(False, f"systemd did not answer for {self.params['service']} (systemctl show failed)")
        state = self.unit.get("UnitFileState") or "not installed"
        active = f"{self.unit.get('ActiveState', '?')} ({self.unit.get('SubState', '?')})"
        ok = state == "enabled" and self.unit.get("ActiveState") == "active"
        return Verdict(ok, f"{self.params['service']} {state}, {active}")

    def item_6(self) -> Verdict:
        memory, in_use, cpu = self.limits()
        use = f" ({_size(in_use)} in use)" if in_use else ""
        seen = [f"MemoryMax {_size(memory)}{use}" if memory else "no MemoryMax"]
        seen.append(f"CPUQuota {cpu:g} %" if cpu else "no CPUQuota")
        if not self.pid:
            seen.append("no running process")
        return Verdict(bool(memory and cpu and self.pid), f"{self.params['service']}: {', '.join(seen)}")

    def limits(self) -> tuple[int, int, float]:
        """The unit's memory limit and use (bytes) and CPU quota (% of one CPU); 0 for none. The kernel's figures
        (the unit's cgroup) when readable, else systemd's."""
        group = self.unit.get("ControlGroup", "")
        where = f"{self.cgroup_root}{group}" if group else ""
        memory = _read(f"{where}/memory.max") if where else ""
        in_use = _read(f"{where}/memory.current") if where else ""
        cpu = _read(f"{where}/cpu.max") if where else ""
        quota = _cgroup_cpu(cpu) if cpu else _systemd_cpu(self.unit.get("CPUQuotaPerSecUSec", ""))
        return (
            _bytes(memory or self.unit.get("MemoryMax", "")),
            _bytes(in_use or self.unit.get("MemoryCurrent", "")),
            quota,
        )

    def item_7(self) -> Verdict:
        persistent = _truthy(self.config.get("persistent", False))
        if not persistent:
            return Verdict(False, "Flower runs with persistent off")
        db = str(self.config.get("db", "flower"))
        if not os.path.isabs(db) and self.pid:
            db = os.path.join(self.cwd, db)
        python = os.path.join(os.path.dirname(str(self.config["_argv"][0])), "python") if self.config["_argv"] else ""
        # Flower's Python's dbm finds the database's files whatever its backend (see DBM_PROBE).
        rc, out = self.run([python or "python3", "-c", DBM_PROBE, db])
        if rc != 0 and out.endswith("no database"):
            return Verdict(False, f"persistent on, but no database at {db} (Flower saves on its save interval)")
        if rc != 0:
            return Verdict(False, f"persistent on; {db} does not open with Flower's Python: {_last_line(out)}")
        opened = re.search(r"^(dbm\.\w+) (\[.*\])$", out, re.MULTILINE)
        kind, keys = (opened.group(1), json.loads(opened.group(2))) if opened else ("unknown dbm", [])
        seen = f"persistent on; {db} ({kind}) opens with Flower's Python and {_state_keys(keys)}"
        stale = self.saves_failing(db)
        return Verdict(not stale, f"{stale}; {seen}" if stale else seen)

    def saves_failing(self, db: str) -> str:
        """What says the running Flower's periodic saves fail: its database older than two save intervals (and a
        few seconds for the save itself) while Flower has run longer than that. Flower logs the failure, and serves
        on."""
        try:
            every = float(str(self.config.get("state_save_interval", 0))) / 1000
        except ValueError:
            return ""
        started_at = self.started_at()
        if every <= 0 or started_at is None:
            return ""
        # The suffixes Flower 2.2's own load_state moves aside, so not its temporary save file (`<db>.tmp*`).
        files = [db + suffix for suffix in ("", ".db", ".dat", ".dir", ".bak") if os.path.isfile(db + suffix)]
        saved = max((os.stat(name).st_mtime for name in files), default=0.0)
        now, limit = time.time(), 2 * every + SAVE_SLACK_S
        if now - started_at <= limit or now - saved <= limit:
            return ""
        return (
            f"Flower's last save is {_duration(now - saved)} old, though it saves every {_duration(every)}: "
            f"its saves fail (a full or read-only volume? Flower's log says why)"
        )

    def started_at(self) -> float | None:
        """When the running Flower started, on the wall clock (the unit's start is on the monotonic one)."""
        started = int(self.unit.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
        if not self.pid or not started:
            return None
        return time.time() - (time.monotonic() - started)

    def item_8(self) -> Verdict:
        raw = self.config.get("max_tasks")
        if raw is None:
            return Verdict(False, "max_tasks is not set in Flower's configuration (Flower then keeps 100000 tasks)")
        try:
            max_tasks = int(str(raw))
        except ValueError:
            return Verdict(False, f"Flower's max_tasks {_shorten(raw, 40)!r} is not a number")
        need, figured_for = self.params["memory_need_bytes"] or 0, self.params["memory_need_max_tasks"] or 0
        if need <= 0 or figured_for <= 0:
            return Verdict(
                False,
                f"Flower runs with max_tasks {max_tasks}, but its memory figure was not given "
                "(memory_need_bytes and memory_need_max_tasks, from the flower role)",
            )
        if max_tasks != figured_for:
            return Verdict(
                False,
                f"Flower runs with max_tasks {max_tasks} but its memory figure is for {figured_for}: run site.yml",
            )
        limit = self.unit.get("MemoryMax", "infinity")
        if not limit.isdigit():
            return Verdict(False, f"max_tasks {max_tasks}, but no MemoryMax bounds it")
        ok = max_tasks > 0 and need <= int(limit)
        seen = f"max_tasks {max_tasks}: a state save needs ~{_size(need)}, MemoryMax {_size(int(limit))}"
        stale = self.changed_since_start(str(self.config.get("_conf", "")))
        if stale:
            return Verdict(False, f"{stale}: the max_tasks in force is not known (restart Flower); {seen}")
        return Verdict(ok, f"{seen}; {self.tasks_held()}")

    def changed_since_start(self, path: str) -> str:
        """What says the running Flower may not run with the file at path: its modification after Flower started."""
        started_at = self.started_at()
        if not path or started_at is None:
            return ""
        try:
            modified = os.stat(path).st_mtime
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        if modified > started_at + 1:
            return f"{path} changed {_duration(modified - started_at)} after Flower started"
        return ""

    def tasks_held(self) -> str:
        """How many tasks the running Flower holds (its task table's total), read with the first admin's login."""
        admin = self.first_admin()
        if not admin:
            return "tasks held not read (no admin login)"
        client = self.make_client(admin["name"], admin["password"])
        try:
            reply = client.get(TASK_TABLE)
            held = json.loads(reply.text())["recordsTotal"] if reply.status == 200 else None
        except (FetchError, ValueError, KeyError, TypeError):
            held = None
        return f"Flower holds {held} tasks" if isinstance(held, int) else "tasks held not readable"

    def item_9(self) -> Verdict:
        problems, seen = [], []
        try:
            reply = self.client.get("/metrics", authenticated=False)
            families = set(re.findall(r"^# TYPE (flower_\w+)", reply.text(), re.MULTILINE))
            if reply.status == 200 and "flower_" in reply.text():
                seen.append(f"/metrics answers through nginx ({len(families)} flower_ metrics)")
            else:
                problems.append(f"/metrics answered {reply.describe()}")
        except FetchError as exc:
            problems.append(str(exc))
        monitoring = self.params["monitoring"]
        public = urlsplit(self.params["url"])
        host, path = public.hostname or "", public.path.rstrip("/") + "/metrics"
        if monitoring:
            mine = [
                t
                for t in monitoring.get("targets", [])
                if (t.get("labels") or {}).get("job") == "flower"
                and path == urlsplit(t.get("scrapeUrl", "")).path
                and _names_host(t, host, self.params["instance"])
            ]
            up = [t for t in mine if t.get("health") == "up"]
            if up:
                seen.append(f"Prometheus on {monitoring.get('host')} scrapes {up[0].get('scrapeUrl')}: up")
            elif mine:
                problems.append(
                    f"Prometheus on {monitoring.get('host')} scrapes {mine[0].get('scrapeUrl')}: "
                    f"{mine[0].get('health')} ({_shorten(mine[0].get('lastError'))})"
                )
            else:
                problems.append(f"Prometheus on {monitoring.get('host')} has no target for {host}{path}")
        elif self.params["external_prometheus"]:
            seen.append(f"external Prometheus declared: {self.params['external_prometheus']}")
        else:
            problems.append("no Prometheus scrapes this host (no monitoring host, none declared)")
        return Verdict(not problems, "; ".join(problems + seen))

    def item_10(self) -> Verdict:
        monitoring = self.params["monitoring"]
        if not monitoring:
            return Verdict(False, "no monitoring host to check the alert rules on")
        where = f"{monitoring.get('rules_file')} on {monitoring.get('host')}"
        if not monitoring.get("rules_file_exists"):
            return Verdict(False, f"{where} is missing")
        output = _promtool(str(monitoring.get("rules_check_output", "")), str(monitoring.get("rules_file")))
        if monitoring.get("rules_check_rc") != 0:
            return Verdict(False, f"promtool check rules {where} failed: {output}")
        groups = monitoring.get("rule_groups", [])
        if not groups:
            return Verdict(False, f"{where} passes promtool ({output}), but Prometheus has loaded no rules")
        return Verdict(True, f"{where} passes promtool ({output}); Prometheus loaded groups {', '.join(groups)}")

    def item_11(self) -> Verdict:
        timer = self.params["backup_timer"]
        state = self.systemctl_show(timer, "ActiveState UnitFileState TimersCalendar Unit")
        if not state:
            return Verdict(False, f"systemd did not answer for {timer} (systemctl show failed)")
        if state.get("ActiveState") != "active":
            return Verdict(
                False, f"{timer} is {state.get('ActiveState')} ({state.get('UnitFileState') or 'not installed'})"
            )
        interval = self.timer_interval(state.get("TimersCalendar", ""))
        path = self.params["backup_status_file"]
        if not path:
            return Verdict(False, f"{timer} active, but no backup_status_file given (the backup's status_file)")
        status, problem = _backup_status(path)
        if problem:
            return Verdict(False, f"{timer} active, but {problem}")
        judged = _judge_backup(timer, interval, path, status)
        failed = self.failed_run(state.get("Unit", ""))
        return Verdict(False, f"{failed}; {judged.evidence}") if failed else judged

    def failed_run(self, service: str) -> str:
        """The backup service's own word on its last run: a run that could not write its status file (a full
        volume, where the archives are) fails the unit all the same."""
        run = self.systemctl_show(service, "ActiveState Result") if service else {}
        if run.get("ActiveState") != "failed":
            return ""
        return f"{service} failed its last run (result {run.get('Result')}; journalctl -u {service} says why)"

    def timer_interval(self, calendar: str) -> float:
        """Seconds between the timer's next two elapses, from its OnCalendar expression."""
        match = re.search(r"OnCalendar=([^;]+);", calendar)
        if not match:
            return 0.0
        rc, out = self.run(["systemd-analyze", "calendar", "--iterations=2", match.group(1).strip()])
        # systemd 252 (Debian 12) writes "Iter. #2:", systemd 257 (Debian 13) "Iteration #2:".
        stamps = re.findall(r"(?:Next elapse|Iter(?:\.|ation) #\d+): \S+ (\S+ \S+)", out)
        if rc != 0 or len(stamps) < 2:
            return 0.0
        first, second = (time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S")) for s in stamps[:2])
        return second - first

    def item_12(self) -> Verdict:
        files = self.params["logrotate_files"]
        if not files:
            return Verdict(False, "no logrotate file given")
        problems, seen = [], []
        for path in files:
            if not os.path.isfile(path):
                problems.append(f"{path} is missing")
                continue
            rc, out = self.run(["logrotate", "--debug", path])
            errors = [line for line in out.splitlines() if line.startswith("error")]
            if rc != 0 or errors:
                problems.append(f"{path}: {_shorten('; '.join(errors)) if errors else _last_line(out)}")
            else:
                logs = len(re.findall(r"considering log", out))
                seen.append(f"{path} valid (rotates {logs} log{'s' if logs != 1 else ''})")
        timer_ok, timer_seen = self.logrotate_runs()
        (seen if timer_ok else problems).append(timer_seen)
        return Verdict(not problems, "; ".join(problems + seen))

    def logrotate_runs(self) -> tuple[bool, str]:
        """Whether logrotate really runs: its timer active, and the last run of its unit not failed."""
        timer = self.params["logrotate_timer"]
        state = self.systemctl_show(timer, "ActiveState UnitFileState Unit LastTriggerUSec")
        if state.get("ActiveState") != "active":
            installed = state.get("UnitFileState") or "not installed"
            return False, f"{timer} is {state.get('ActiveState', 'unknown')} ({installed}): nothing rotates"
        unit = state.get("Unit") or timer.replace(".timer", ".service")
        last = self.systemctl_show(unit, "Result ExecMainStatus")
        last_run = state.get("LastTriggerUSec") or ""
        when = f"last run {last_run}" if last_run and last_run != "n/a" else "not run since boot"
        if last.get("Result", "success") != "success":
            status = last.get("ExecMainStatus", "?")
            return False, f"the last rotation failed ({unit}: {last.get('Result')}, exit status {status}; {when})"
        return True, f"{timer} active, {when}"

    def item_13(self) -> Verdict:
        admin = self.first_admin()
        answers = [("anonymous /", self.client, False)]
        if admin:
            answers.append((f"{admin['name']} /", self.make_client(admin["name"], admin["password"]), True))
        problems, seen = [], []
        for label, client, authenticated in answers:
            try:
                reply = client.get("/", authenticated=authenticated)
            except FetchError as exc:
                problems.append(str(exc))
                continue
            missing = [name for name in self.params["headers"] if not reply.header(name)]
            if missing:
                problems.append(f"{label} (HTTP {reply.status}) lacks {', '.join(missing)}")
            else:
                seen.append(f"{label} (HTTP {reply.status})")
        evidence = "; ".join(problems) or f"{', '.join(self.params['headers'])} on " + ", ".join(seen)
        return Verdict(not problems, evidence)

    def item_14(self) -> Verdict:
        statuses: dict[int, int] = {}
        burst = self.make_client(wait_when_limited=0.0)  # the 429 is what this item looks for
        for sent in range(1, self.params["burst_max"] + 1):
            try:
                reply = burst.get("/api/workers", authenticated=False)
            except FetchError as exc:
                return Verdict(False, f"after {sent - 1} requests: {exc}")
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            if reply.status == 429:
                return Verdict(True, f"HTTP 429 after {sent} requests in a burst to /api/workers")
        counts = ", ".join(f"{count} x HTTP {status}" for status, count in sorted(statuses.items()))
        return Verdict(False, f"no HTTP 429 in {self.params['burst_max']} requests ({counts})")

    def item_15(self) -> Verdict:
        path = self.params["runbook"]
        text = _read(path, limit=200_000)
        if not text:
            return Verdict(False, f"no runbook at {path}")
        match = REVIEWED.search(text)
        if not match:
            return Verdict(False, f"{path} has no 'Last reviewed: YYYY-MM-DD' line")
        try:
            age = (date.today() - date.fromisoformat(match.group(1))).days
        except ValueError:
            return Verdict(False, f"{path}: last reviewed {match.group(1)!r} is not a date")
        limit = self.params["runbook_max_age_days"]
        reviewed = f"{path} last reviewed {match.group(1)}, {age} days ago (max {limit})"
        if not 0 <= age <= limit:
            return Verdict(False, reviewed)
        names = self.runbook_names()
        missing = [name for name in names if name not in text]
        if missing:
            return Verdict(False, f"{reviewed}, but it does not name this host's {', '.join(missing)}")
        return Verdict(True, f"{reviewed}; names {', '.join(names)}")

    def runbook_names(self) -> list[str]:
        """What the runbook must name here: this URL, the file of Flower's settings, its state's directory."""
        names = [self.params["url"].rstrip("/")]
        conf = str(self.config.get("_conf", ""))
        db = str(self.config.get("db", ""))
        if conf:
            names.append(conf)
        if db:
            names.append(os.path.dirname(os.path.join(self.cwd, db)) + "/")
        return names

    def item_16(self) -> Verdict:
        users = self.params["users"]
        if not users:
            return Verdict(
                False, "no password logins to test (OAuth): test team access by hand and waive with the date"
            )
        problems, seen = [], []
        for user in users:
            client = self.make_client(user["name"], user["password"])
            try:
                reply = client.get("/api/workers")
                if reply.status != 200:
                    problems.append(f"{user['name']} cannot log in ({reply.describe()})")
                    continue
                seen.append(f"{user['name']} ({user['role']}) logs in")
                if user["role"] == "viewer":
                    write = client.request("POST", HARMLESS_WRITE)
                    if write.status != 403:
                        problems.append(f"viewer {user['name']} was not refused a write ({write.describe()})")
                    else:
                        seen.append(f"{user['name']}'s write refused (403)")
            except FetchError as exc:
                problems.append(str(exc))
        # Logins that work prove nothing if any password does: a wrong one must be refused.
        name = users[0]["name"]
        try:
            wrong = self.make_client(name, WRONG_PASSWORD).get("/api/workers")
            if wrong.status == 401:
                seen.append(f"a wrong password for {name} refused (401)")
            else:
                problems.append(f"a wrong password for {name} got {wrong.describe()}, not 401: logins are not checked")
        except FetchError as exc:
            problems.append(str(exc))
        return Verdict(not problems, "; ".join(problems + seen))


# The burst (14) comes last: it spends the rate limit's allowance the other requests need.
ORDER = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 14)


def _literal_assignments(path: str) -> dict[str, object]:
    """NAME = <literal> lines of a Python config file; other statements are ignored."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _local_only(address: str) -> bool:
    """A Unix socket path, or a loopback TCP address."""
    if address.startswith("/") or address.startswith("@"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "localhost")


def _port(address: str) -> int:
    tail = address.rsplit(":", 1)[-1] if ":" in address and not address.startswith("/") else ""
    return int(tail) if tail.isdigit() else 0


def _rule_ports(target: str) -> set[int]:
    """Ports of a ufw rule's target column (5555, 5555/tcp, 6000:6010/tcp, 80,443/tcp)."""
    ports: set[int] = set()
    for part in target.split("/")[0].split(","):
        low, _sep, high = part.partition(":")
        if low.isdigit():
            ports.update(range(int(low), int(high or low) + 1))
    return ports


IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class UfwRule(NamedTuple):
    """One incoming rule of `ufw status verbose`."""

    text: str  # the line without its comment, spaces collapsed: "443/tcp ALLOW IN Anywhere"
    admits: bool  # ALLOW or LIMIT
    ports: frozenset[int] | None  # None: every port
    proto: str  # tcp, udp, or "" for both
    source: IPNetwork | None  # None: not an address (an application profile)
    comment: str


ACTIONS = ("ALLOW", "LIMIT", "DENY", "REJECT")
PORT_SPEC = re.compile(r"^[0-9][0-9,:]*(/[a-z]+)?$")


def _ufw_network(word: str, v6: bool) -> IPNetwork | None:
    if word == "Anywhere":
        return ipaddress.ip_network("::/0" if v6 else "0.0.0.0/0")
    try:
        return ipaddress.ip_network(word, strict=False)
    except ValueError:
        return None


def _ufw_rule(line: str) -> UfwRule | None:
    """An incoming rule line of `ufw status verbose` (To, Action, From, # comment), or None for other lines."""
    body, _sep, comment = line.partition("#")
    words = body.split()
    action = next((i for i, word in enumerate(words) if word in ACTIONS), 0)
    if not action or words[action + 1 : action + 2] not in ([], ["IN"]):
        return None
    target, origin = words[:action], [w for w in words[action + 1 :] if w != "IN"]
    v6 = "(v6)" in words
    specs = [word for word in target if PORT_SPEC.match(word)]
    named = [w for w in target if w != "(v6)" and not PORT_SPEC.match(w) and _ufw_network(w, v6) is None]
    if named and not specs:
        # An application profile (OpenSSH) or an interface: its ports are not on this line.
        ports: frozenset[int] | None = frozenset()
    else:
        ports = frozenset(p for spec in specs for p in _rule_ports(spec)) if specs else None
    proto = specs[0].partition("/")[2] if specs else ""
    return UfwRule(
        text=" ".join(words),
        admits=words[action] in ("ALLOW", "LIMIT"),
        ports=ports,
        proto=proto,
        source=_ufw_network(origin[0], v6) if origin else None,
        comment=comment.strip(),
    )


def _managed(rule: UfwRule, marker: str) -> bool:
    """Whether the firewall role wrote the rule: its comment's first word is the marker ("flowerops proxy")."""
    return rule.comment.split(" ", 1)[0] == marker


def _overlaps(one: UfwRule, other: UfwRule) -> frozenset[int]:
    """Ports both rules open (for a common protocol); an every-port rule overlaps all of the other's."""
    if one.proto and other.proto and one.proto != other.proto:
        return frozenset()
    if one.ports is None:
        return other.ports or frozenset()
    return one.ports & other.ports if other.ports is not None else one.ports


def _wider_than_managed(rules: list[UfwRule], marker: str) -> list[str]:
    """Rules without the marker that open a managed port to sources the managed (marked) rules do not admit."""
    managed = [rule for rule in rules if rule.admits and _managed(rule, marker) and rule.source]
    problems = []
    for rule in rules:
        if not rule.admits or _managed(rule, marker) or rule.source is None:
            continue
        wider = set()
        for port in {port for owner in managed for port in _overlaps(rule, owner)}:
            granted = [
                owner.source
                for owner in managed
                if port in _overlaps(rule, owner) and owner.proto in ("", rule.proto) and owner.source
            ]
            if not any(g.version == rule.source.version and rule.source.subnet_of(g) for g in granted):
                wider.add(port)
        if wider:
            sources = sorted({str(o.source) for o in managed if _overlaps(rule, o) & wider})
            problems.append(
                f"a rule opens managed port {', '.join(map(str, sorted(wider)))} wider than its {marker} rules "
                f"({', '.join(sources)}): {rule.text}"
            )
    return problems


def _names_host(target: dict, host: str, instance: str = "") -> bool:
    """Whether a Prometheus target is this Flower host: its instance label is the host's, or its instance, its
    address or its scrape URL names the public host."""
    labels = target.get("labels") or {}
    discovered = target.get("discoveredLabels") or {}
    if instance and labels.get("instance") == instance:
        return True
    names = (labels.get("instance", ""), discovered.get("__address__", ""), target.get("scrapeUrl", ""))
    return any(host in name for name in names)


def _backup_status(path: str) -> tuple[dict, str]:
    """The backup's status file (the backup user writes it, root reads it: never through a link), or a problem."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return {}, f"no backup status at {path} (no backup run has finished since the backup was installed)"
        return {}, f"the backup status {path} is unreadable: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}, f"the backup status {path} is not a regular file"
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(1 << 16)
    finally:
        os.close(fd)
    try:
        status = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        return {}, f"the backup status {path} is not JSON: {exc}"
    if not isinstance(status, dict) or status.get("schema") != BACKUP_STATUS_SCHEMA:
        schema = status.get("schema") if isinstance(status, dict) else None
        return {}, f"the backup status {path} has schema {schema!r}, this audit reads {BACKUP_STATUS_SCHEMA}"
    return status, ""


def _age_seconds(stamp: object) -> float | None:
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return time.time() - when.timestamp()


def _judge_backup(timer: str, interval: float, path: str, status: dict) -> Verdict:
    """Item 11 on the status file a backup run wrote (flower_backup.py's STATUS_SCHEMA), summarised from its
    fields: the archive's name, when it finished, its task count, whether it was verified."""
    archive, finished = status.get("archive"), status.get("finished")
    age = _age_seconds(finished)
    problems = []
    if not status.get("ok") or status.get("error"):
        good = status.get("last_good") or {}
        since = f"last good: {good.get('archive')}, {_when(good.get('finished'))}" if good else "no good backup"
        problems.append(f"the last backup run failed {_when(finished)}: {_shorten(status.get('error'))} ({since})")
    elif status.get("verified") is not True:
        problems.append(f"the last backup's archive {archive} was not verified after it was written")
    if age is None:
        problems.append(f"the backup status {path} has no UTC finished time ({finished!r})")
    elif not interval:
        problems.append(
            f"{timer}'s interval is unknown (its calendar did not parse): the backup's age "
            f"({_duration(age)}) cannot be judged"
        )
    elif age > 2 * interval:
        problems.append(
            f"the last backup run finished {_duration(age)} ago, more than twice {timer}'s interval "
            f"({_duration(interval)})"
        )
    checked = status.get("last_verify") or {}  # a later `flower-backup verify` of this archive
    if checked.get("archive") == archive and checked.get("ok") is False:
        problems.append(
            f"{archive} failed flower-backup verify {_when(checked.get('finished'))}: {_shorten(checked.get('error'))}"
        )
    if problems:
        return Verdict(False, f"{timer} active; " + "; ".join(problems))
    return Verdict(
        True,
        f"{timer} active (every {_duration(interval)}); last backup {archive}, finished {_when(finished)}: "
        f"{status.get('tasks')} tasks, verified",
    )


def _when(stamp: object) -> str:
    """A status file's UTC time for an operator: 2026-03-01 04:00 UTC (25 min ago)."""
    age = _age_seconds(stamp)
    if age is None:
        return f"at {stamp!r}"
    moment = datetime.fromtimestamp(time.time() - age, tz=timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M} UTC ({_duration(age)} ago)"


def _duration(seconds: float) -> str:
    """45 s, 25 min, 3.0 h, 2.5 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(count: int) -> str:
    """Bytes in binary units, as systemd takes them: 384 MiB, 1.5 GiB, 512 B."""
    value, units = float(count), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{text[:-2] if text.endswith('.0') else text} {units[0]}"


def _bytes(value: str) -> int:
    """A memory figure of cgroup or systemd: bytes, or 0 for none (max, infinity, [not set], the unsigned -1)."""
    value = value.strip()
    return int(value) if value.isdigit() and int(value) < 1 << 63 else 0


def _cgroup_cpu(line: str) -> float:
    """cgroup v2 cpu.max ("50000 100000": quota and period in us) as % of one CPU; 0 for none ("max 100000")."""
    quota, _sep, period = line.partition(" ")
    if not quota.isdigit() or not period.strip().isdigit() or not int(period):
        return 0.0
    return round(100 * int(quota) / int(period), 1)


def _systemd_cpu(span: str) -> float:
    """systemd's CPUQuotaPerSecUSec (500ms, 1.500000s, infinity) as % of one CPU; 0 for none."""
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|min|s)\b", span)
    return round(100 * sum(float(number) * scale[unit] for number, unit in parts), 1)


def _shorten(text: object, limit: int = SNIPPET) -> str:
    """Text on one line; when longer than limit, its first and last words around an ellipsis (an error says what
    failed first and why last), cut between words - inside a word only when one word is longer than half."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    half = (limit - 3) // 2
    head, tail = line[:half], line[-half:]
    if " " in head[1:]:
        head = head.rsplit(" ", 1)[0] if line[half] != " " else head
    if " " in tail[:-1]:
        tail = tail.split(" ", 1)[1] if line[-half - 1] != " " else tail
    return f"{head.rstrip()} … {tail.lstrip()}"


def _last_line(output: str) -> str:
    """The last non-empty line of a command's output (where an error or a traceback says what went wrong)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return _shorten(lines[-1]) if lines else ""


def _promtool(output: str, rules_file: str) -> str:
    """`promtool check rules` output, summarised: "4 rules found", or its error lines without the file's name."""
    found = re.search(r"SUCCESS: (\d+) rules found", output)
    if found:
        return f"{found.group(1)} rules found"
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("Checking ")]
    named = f"{rules_file}: "
    detail = " ".join(line[len(named) :] if line.startswith(named) else line for line in lines if line != "FAILED:")
    return _shorten(detail) or "no output"


def _state_keys(keys: list[str]) -> str:
    """What the database's keys say to an operator: whether it holds the state Flower saves."""
    if not keys:
        return "is empty (Flower has not saved its state there)"
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    if all(key in keys for key in FLOWER_STATE_KEYS):
        return f"holds Flower's saved state ({shown})"
    return f"holds no state Flower saved (its keys: {shown}; Flower saves {', '.join(FLOWER_STATE_KEYS)})"


def _read(path: str, limit: int = 4096) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit).strip()
    except OSError:
        return ""


def audit(module: AnsibleModule, waivers: dict[int, str], numbers: tuple[int, ...] = ORDER) -> list[dict[str, object]]:
    """The items' verdicts, in ORDER (or the subset numbers, in that order), sorted by number."""
    auditor = Audit(module)
    results: dict[int, dict[str, object]] = {}
    for number in (number for number in ORDER if number in numbers):
        check: Callable[[], Verdict] = getattr(auditor, f"item_{number}")
        try:
            verdict = check()
        except (OSError, ValueError, KeyError, TypeError, IndexError, ssl.SSLError) as exc:
            verdict = Verdict(False, f"could not be observed: {type(exc).__name__}: {_shorten(exc)}")
        status = WAIVED if number in waivers else (PASS if verdict.ok else FAIL)
        # One line (the table's evidence column), of a length an operator reads.
        evidence = _shorten(verdict.evidence, MAX_EVIDENCE)
        results[number] = dict(
            id=number, name=NAMES[number], status=status, evidence=evidence, waiver=waivers.get(number, "")
        )
    return [results[number] for number in sorted(results)]


def parse_waivers(module: AnsibleModule) -> dict[int, str]:
    waivers: dict[int, str] = {}
    for key, reason in module.params["waivers"].items():
        if not str(key).isdigit() or int(key) not in NAMES:
            module.fail_json(msg=f"waivers: {key!r} is not a checklist item (1 to 16)")
        if not isinstance(reason, str) or not reason.strip():
            module.fail_json(msg=f"waivers: item {key} needs a reason")
        waivers[int(key)] = reason.strip()
    return waivers


# The module's arguments; flowerops-checklist-watch (the flower_checklist role's timer) takes its defaults from here.
ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    unix_socket=dict(type="path"),
    ca_path=dict(type="path"),
    timeout=dict(type="float", default=10),
    cert_min_days=dict(type="int", default=14),
    health=dict(type="dict", default={}),
    service=dict(type="str", default="flower.service"),
    forbidden_ports=dict(type="list", elements="int", required=True),
    managed_marker=dict(type="str", default="flowerops"),
    memory_need_bytes=dict(type="int"),
    memory_need_max_tasks=dict(type="int"),
    backup_timer=dict(type="str", default="flower-backup.timer"),
    backup_status_file=dict(type="path"),
    logrotate_files=dict(type="list", elements="path", default=[]),
    logrotate_timer=dict(type="str", default="logrotate.timer"),
    headers=dict(
        type="list",
        elements="str",
        default=[
            "Strict-Transport-Security",
            "X-Content-Type-Options",
            "X-Frame-Options",
            "Referrer-Policy",
            "Content-Security-Policy",
            "Permissions-Policy",
        ],
    ),
    burst_max=dict(type="int", default=100),
    monitoring=dict(type="dict", default={}),
    instance=dict(type="str", default=""),
    external_prometheus=dict(type="str", default=""),
    runbook=dict(type="path", default="/usr/local/share/doc/flowerops/runbook.md"),
    runbook_max_age_days=dict(type="int", default=180),
    users=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            role=dict(type="str", choices=["admin", "viewer"], default="admin"),
        ),
    ),
    waivers=dict(type="dict", default={}),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    problem = url_problem(module.params["url"])
    if problem:
        module.fail_json(msg=problem)
    for name in ("timeout", "burst_max"):
        if module.params[name] <= 0:
            module.fail_json(msg=f"{name} must be greater than 0")
    waivers = parse_waivers(module)
    items = audit(module, waivers)
    failed = [item["id"] for item in items if item["status"] == FAIL]
    module.exit_json(changed=False, items=items, failed_items=failed, passed=not failed)


if __name__ == "__main__":
    main()
