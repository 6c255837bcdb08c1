#!/usr/bin/env python3
"""What nginx in front costs and gains: Flower straight from its socket against Flower through nginx.

Starts a fresh systemd container from the project's image and deploys it as the demo is (bench/target.py:
the fixtures, then site.yml), feeds Flower --tasks tasks of real Celery events, then copies a small
standard-library client (bench/agent_http.py) into the container and runs it there with docker exec,
side by side in one run, round by round, each on one keep-alive connection:

  - direct:  Flower's unix socket, plain HTTP, with nginx's own login to Flower (Flower's basic auth
             compares plain text: cheap);
  - proxied: nginx's HTTPS server on 127.0.0.1:443 (the demo's name and CA), with the admin's login
             (a bcrypt hash at the role's cost, checked by nginx on every request).

on `/healthcheck` (no login at nginx: nginx's own proxying cost), `/api/workers`, the task list
`/api/tasks?limit=100` (the API the UI's buttons use; Flower's `/tasks` page is an empty shell that
loads `/tasks/datatable`), and a static file (requests per second, --concurrency processes, and the
CPU Flower's process or nginx's workers used per request meanwhile, which the client does not bound). The
Python client saturates Flower's one thread (static_direct_flower_core_share: the share of one core
Flower spent during its run) but not nginx, so nginx's static rate is measured again with wrk (Debian's
package, installed in the bench's container only; C, keep-alive, --concurrency threads, 4 connections
each): static_rps_proxied and static_speedup use that figure, static_rps_proxied_python_client keeps the
client-bound one. The
proxied requests come from loopback, which the role exempts from its rate limits; nginx's root-only
local HTTPS socket shares one rate-limit bucket for all its clients (nginx sees no address there), which
a burst against it shows (its 429s are counted apart, never timed).

Then the login's own cost in nginx: temporary logins (viewer tier) are appended to nginx's htpasswd, one
per hash (bcrypt at costs 4, 6, 8, 10; sha512-crypt; yescrypt, Debian's default), nginx is reloaded,
and each login is timed on GET /api/workers (proxied to Flower) and on POST /api/workers, which nginx
refuses with 403 for a viewer after checking the password, without asking Flower (that minus a static
file's time, which needs no login, is login_check_ms). The htpasswd file is restored and nginx reloaded
afterwards, whatever happens. healthcheck_p50_ratio is nginx's cost without a login on an endpoint as
cheap as /api/workers.

Prints the figures and writes bench/results/proxy.json. The container is removed at the end.

    .venv/bin/python bench/proxy.py [--keep] [--reuse] [--count 200] [--rounds 4] [--tasks 10000]

Needs the engine and image (scripts/prepare-engine.sh). Bounded: every docker exec and playbook run
has a timeout; the load is --rounds x --count sequential requests per endpoint and target, and
--static-seconds x 2 x 2 of static requests.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import target
import yaml
from target import in_target

NAME = "flowerops-bench-proxy"
AGENT = "/root/bench-agent-http.py"
HTPASSWD = "/etc/nginx/flower.htpasswd"
HTPASSWD_SAVED = "/root/flower.htpasswd.bench-saved"
WRK_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)$", re.M)
PATHS = {"healthcheck": "/healthcheck", "api": "/api/workers", "tasks": "/api/tasks?limit=100"}
# The salt (and so the hash kind and cost) of each temporary login, as Python expressions the target's
# python3 evaluates for its crypt module: libxcrypt, the library nginx checks the hashes with. yescrypt
# (Debian's default for system passwords) has no METHOD_ in Python 3.11: its default cost, spelled out.
HASHES = {
    "bcrypt4": "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**4)",
    "bcrypt6": "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**6)",
    "bcrypt8": "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**8)",
    "bcrypt10": "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**10)",
    "sha512": "crypt.mksalt(crypt.METHOD_SHA512)",
    "yescrypt": "'$y$j9T$' + crypt.mksalt(crypt.METHOD_SHA512)[3:]",
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def upstream_auth(name: str) -> str:
    """nginx's own login to Flower, as nginx sends it (root-only file)."""
    conf = in_target(name, "cat", "/etc/nginx/flower-upstream-auth.conf")
    return next(line.split('"')[1] for line in conf.splitlines() if "Authorization" in line)


def static_path(name: str, venv: str) -> str:
    """A script every Flower page loads, served by Flower under /static/."""
    found = in_target(name, "sh", "-c", f"ls {venv}/lib/python3*/site-packages/flower/static/js/flower.js")
    return "/static/" + found.strip().split("/static/", 1)[1]


def targets(name: str) -> dict[str, dict[str, Any]]:
    flower, proxy, tls = target.fact(name, "flower"), target.fact(name, "flower_proxy"), target.fact(name, "flower_tls")
    admin = basic("admin", target.secret(name, "admin-password"))
    https = {"scheme": "https", "host": proxy["domain"], "ca": tls.get("ca_file", ""), "auth": admin}
    flower_pid = int(in_target(name, "systemctl", "show", "-p", "MainPID", "--value", "flower"))
    nginx_workers = [int(pid) for pid in in_target(name, "sh", "-c", "pgrep -P $(cat /run/nginx.pid)").split()]
    direct = {"scheme": "http", "unix": flower["unix_socket"], "host": "localhost", "auth": upstream_auth(name)}
    return {
        "direct": {**direct, "server_pids": [flower_pid]},
        "proxied": {**https, "address": "127.0.0.1", "port": 443, "server_pids": nginx_workers},
        "local_socket": {**https, "unix": proxy["local_socket"]},
    }


def run_agent(name: str, plan: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    return json.loads(in_target(name, "python3", AGENT, stdin=json.dumps(plan), timeout=timeout))


def latency_jobs(args: argparse.Namespace, static: str) -> list[dict[str, Any]]:
    paths = {**PATHS, "static": static}
    return [
        {"kind": "latency", "target": where, "what": what, "path": path, "count": args.count}
        for _ in range(args.rounds)
        for what, path in paths.items()
        for where in ("direct", "proxied")
    ]


def rps_jobs(args: argparse.Namespace, static: str) -> list[dict[str, Any]]:
    return [
        {"kind": "rps", "target": where, "what": "static", "path": static, "seconds": args.static_seconds,
         "concurrency": args.concurrency}
        for _ in range(2)
        for where in ("direct", "proxied")
    ]  # fmt: skip


def wrk_static(args: argparse.Namespace, static: str) -> dict[str, Any]:
    """nginx's static rate with a client that does not bound it: wrk in the target, over HTTPS on loopback
    (no login: static files need none; loopback: no rate limit), two runs, as the Python client's."""
    in_target(args.name, "apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk", timeout=300)
    domain = target.fact(args.name, "flower_proxy")["domain"]
    seconds = max(1, round(args.static_seconds))
    rates = []
    for _ in range(2):
        out = in_target(
            args.name, "wrk", f"-t{args.concurrency}", f"-c{4 * args.concurrency}", f"-d{seconds}s",
            "-H", f"Host: {domain}", f"https://127.0.0.1:443{static}", timeout=seconds + 60,
        )  # fmt: skip
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk got errors: {out}")
        rates.append(float(WRK_RATE.search(out).group(1)))
    return {"rps": rates, "threads": args.concurrency, "connections": 4 * args.concurrency, "seconds": seconds}


def burst_job() -> dict[str, Any]:
    """Back-to-back API requests on nginx's local socket: all its clients share one rate bucket."""
    return {"kind": "latency", "target": "local_socket", "what": "burst", "path": PATHS["api"], "count": 40}


def merge(rows: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The rounds of each (what, target) put together."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row["kind"] != kind:
            continue
        entry = merged.setdefault((row["what"], row["target"]), {"times": [], "statuses": {}, "rps": [], "cpu": []})
        entry["times"] += row.get("times", [])
        entry["rps"].append(row.get("rps", 0.0))
        entry["cpu"].append(row.get("server_cpu_us", 0.0))
        for status, count in row["statuses"].items():
            entry["statuses"][status] = entry["statuses"].get(status, 0) + count
    return merged


def add_logins(name: str, password: str) -> dict[str, str]:
    """Append one temporary viewer-tier login per hash kind; their htpasswd lines."""
    program = "import crypt, sys\n" + "".join(
        f"print('bench-{kind}:' + crypt.crypt(sys.argv[1], {salt}))\n" for kind, salt in HASHES.items()
    )
    lines = in_target(name, "python3", "-W", "ignore", "-c", program, password).splitlines()
    in_target(name, "cp", "-p", HTPASSWD, HTPASSWD_SAVED)
    in_target(name, "sh", "-c", f"cat >> {HTPASSWD}", stdin="\n".join(lines) + "\n")
    in_target(name, "systemctl", "reload", "nginx")
    return dict(line.split(":", 1) for line in lines)


def restore_logins(name: str) -> None:
    in_target(name, "sh", "-c", f"test ! -e {HTPASSWD_SAVED} || mv {HTPASSWD_SAVED} {HTPASSWD}", check=False)
    in_target(name, "systemctl", "reload", "nginx", check=False)


def auth_jobs(args: argparse.Namespace, password: str) -> list[dict[str, Any]]:
    jobs = []
    for _ in range(args.rounds):
        for kind in HASHES:
            auth = basic(f"bench-{kind}", password)
            common = {"kind": "latency", "target": "proxied", "path": PATHS["api"], "count": args.auth_count}
            jobs.append({**common, "what": f"get-{kind}", "auth": auth})
            jobs.append({**common, "what": f"post403-{kind}", "auth": auth, "method": "POST", "expect": 403})
    return jobs


def measure_logins(args: argparse.Namespace) -> dict[str, Any]:
    password = secrets.token_urlsafe(18)
    try:
        hashes = add_logins(args.name, password)
        rows = run_agent(args.name, {"targets": targets(args.name), "jobs": auth_jobs(args, password)}, 900)
    finally:
        restore_logins(args.name)
    merged = merge(rows, "latency")
    table = {}
    for kind in HASHES:
        get, post = merged[(f"get-{kind}", "proxied")], merged[(f"post403-{kind}", "proxied")]
        table[kind] = {
            "prefix": hashes[f"bench-{kind}"][:7],
            "get_api_workers": {**target.summary(get["times"]), "statuses": get["statuses"]},
            "post_refused_403": {**target.summary(post["times"]), "statuses": post["statuses"]},
        }
    return table


def figures(merged: dict, rates: dict, logins: dict, burst: dict[str, Any], wrk: dict[str, Any]) -> dict[str, Any]:
    def p(what: str, where: str, q: str) -> float:
        return target.summary(merged[(what, where)]["times"])[q]

    def rps(where: str) -> float:
        return round(max(rates[("static", where)]["rps"]), 1)

    direct_runs = zip(rates[("static", "direct")]["rps"], rates[("static", "direct")]["cpu"], strict=True)
    proxied = round(max(wrk["rps"]), 1)

    return {
        "api_p50_direct_ms": p("api", "direct", "p50_ms"),
        "api_p50_proxied_ms": p("api", "proxied", "p50_ms"),
        "api_p50_ratio": round(p("api", "proxied", "p50_ms") / p("api", "direct", "p50_ms"), 2),
        "healthcheck_p50_ratio": round(p("healthcheck", "proxied", "p50_ms") / p("healthcheck", "direct", "p50_ms"), 2),
        "api_p99_direct_ms": p("api", "direct", "p99_ms"),
        "api_p99_proxied_ms": p("api", "proxied", "p99_ms"),
        "tasks_page_p50_direct_ms": p("tasks", "direct", "p50_ms"),
        "tasks_page_p50_proxied_ms": p("tasks", "proxied", "p50_ms"),
        "static_rps_direct": rps("direct"),
        "static_rps_proxied": proxied,
        "static_speedup": round(proxied / rps("direct"), 2),
        "static_rps_proxied_python_client": rps("proxied"),
        "static_direct_flower_core_share": round(max(r * cpu / 1e6 for r, cpu in direct_runs), 2),
        "static_wrk": wrk,
        "detail": {
            f"{what} {where}": {**target.summary(entry["times"]), "statuses": entry["statuses"]}
            for (what, where), entry in merged.items()
        },
        "static_rps_runs": {where: rates[("static", where)]["rps"] for where in ("direct", "proxied")},
        "static_server_cpu_us_per_request": {
            where: round(min(rates[("static", where)]["cpu"]), 1) for where in ("direct", "proxied")
        },
        "static_statuses": {where: rates[("static", where)]["statuses"] for where in ("direct", "proxied")},
        "local_socket_burst_statuses": burst["statuses"],
        "login_cost": logins,
        # The refused POST never reaches Flower and a static file needs no login: the difference is
        # what checking the login costs nginx per request.
        "login_check_ms": {
            kind: round(row["post_refused_403"]["p50_ms"] - p("static", "proxied", "p50_ms"), 2)
            for kind, row in logins.items()
        },
    }


def report(result: dict[str, Any]) -> None:
    print(f"{'':24}{'direct':>10}{'proxied':>10}   (p50 / p99 ms)")
    for what in ("healthcheck", "api", "tasks", "static"):
        d, p = result["detail"][f"{what} direct"], result["detail"][f"{what} proxied"]
        print(f"{what:24}{d['p50_ms']:>10}{p['p50_ms']:>10}   p99 {d['p99_ms']} / {p['p99_ms']}")
    ratio = result["api_p50_ratio"]
    print(f"API p50 ratio {ratio} (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")
    speed = result["static_speedup"]
    print(
        f"static req/s: direct {result['static_rps_direct']}, proxied {result['static_rps_proxied']}, "
        f"x{speed} (target >= 3: {'met' if speed >= 3 else 'NOT met'})"
    )
    cpu = result["static_server_cpu_us_per_request"]
    print(f"static, server CPU per request: Flower {cpu['direct']} us, nginx {cpu['proxied']} us")
    print(
        f"static req/s with the Python client: nginx {result['static_rps_proxied_python_client']} (client-bound); "
        f"Flower used {result['static_direct_flower_core_share']} of a core (its one thread)"
    )
    print(f"local HTTPS socket, 40 back-to-back API requests: {result['local_socket_burst_statuses']}")
    print(f"/healthcheck (no login at nginx) p50 ratio {result['healthcheck_p50_ratio']}")
    print(f"{'login hash':12}{'GET /api/workers p50':>22}{'POST refused p50':>18}{'login check':>13}  (ms)")
    for kind, row in result["login_cost"].items():
        get, post = row["get_api_workers"]["p50_ms"], row["post_refused_403"]["p50_ms"]
        print(f"{kind:12}{get:>22}{post:>18}{result['login_check_ms'][kind]:>13}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target.add_arguments(parser, NAME)
    parser.add_argument("--count", type=int, default=200, help="timed requests per endpoint, target and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each endpoint and target in turn")
    parser.add_argument("--auth-count", type=int, default=50, help="timed requests per login hash and round")
    parser.add_argument("--static-seconds", type=float, default=5, help="seconds of each static run")
    parser.add_argument("--concurrency", type=int, default=2, help="client processes of the static runs")
    parser.add_argument("--tasks", type=int, default=10000, help="tasks fed to Flower first (0: none)")
    args = parser.parse_args()
    load = target.loadavg()
    try:
        target.prepare(args)
        fed = target.feed_tasks(args.name, args.tasks) if args.tasks else {}
        target.copy_in(args.name, Path(__file__).with_name("agent_http.py"), AGENT)
        static = static_path(args.name, target.fact(args.name, "flower")["venv"])
        jobs = latency_jobs(args, static) + rps_jobs(args, static) + [burst_job()]
        rows = run_agent(args.name, {"targets": targets(args.name), "jobs": jobs}, 1800)
        wrk = wrk_static(args, static)
        logins = measure_logins(args)
        latencies = merge(rows, "latency")
        result = {
            **target.header(args.name, load),
            "static_path": static,
            "tasks_page": PATHS["tasks"],
            "tasks_fed": fed,
            "proxied_via": "nginx's HTTPS server on 127.0.0.1:443 in the target (loopback: no rate limit)",
            "bcrypt_rounds_role_default": yaml.safe_load(
                (target.ROOT / "roles" / "flower_proxy" / "defaults" / "main.yml").read_text()
            )["flower_proxy_bcrypt_rounds"],
            "loadavg_end": [round(x, 2) for x in target.loadavg()],
            **figures(latencies, merge(rows, "rps"), logins, latencies[("burst", "local_socket")], wrk),
        }
    finally:
        target.finish(args)
    report(result)
    target.write_result("proxy.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
