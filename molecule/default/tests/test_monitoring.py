"""Prometheus on the monitoring host (here the Flower host itself) scrapes Flower and the queue exporter through
nginx over HTTPS, has the alert rules loaded, answers every Grafana panel's query with data, and the worker-offline
alert goes pending, then firing, and reaches a webhook through Alertmanager when the sample worker stops; and the
checklist's watcher (a timer on each Flower host) makes damage alert with nobody running Ansible."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    FURTHER_INSTANCES,
    GET_ON_HOST,
    INSTANCE,
    MOLECULE,
    PROJECT_DIR,
    SECRETS,
    fetch,
    first_platform_only,
    prometheus,
    record,
    service_diagnostics,
    wait_for,
    wait_until_healthy,
)
from conftest import PREFIX_INSTANCE as OTHER

DASHBOARD = PROJECT_DIR / "roles" / "flower_monitoring" / "files" / "flower-dashboard.json"
RECEIVER = PROJECT_DIR / "tests" / "tools" / "alert_receiver.py"
ALERTS_FILE = "/tmp/flowerops-alerts.jsonl"
RECEIVER_PORT = 9099  # molecule.yml's flower_alerting_webhook_urls


HOST_VARS = MOLECULE["provisioner"]["inventory"]["host_vars"]
# Every Flower: the two platforms' and the prefix platform's second one (cluster c, test_instances.py).
CLUSTERS = {name: HOST_VARS[name]["flower_cluster"] for name in (INSTANCE, OTHER, *FURTHER_INSTANCES)}
EVERY_FLOWER = [1.0] * len(CLUSTERS)


def flower_targets(host: Any) -> list[dict]:
    return [
        target
        for target in prometheus(host, "/api/v1/targets", state="active")["activeTargets"]
        if target["labels"].get("job") in ("flower", "flower_queues")
    ]


def test_prometheus_scrapes_flower_and_the_queue_exporter_through_nginx(host: Any) -> None:
    """Both platforms: this one at its public name, the prefix one across the network, each with the CA its
    own flower_tls recorded (each platform's certificate comes from its own Pebble)."""

    def all_up() -> list[dict] | None:
        targets = flower_targets(host)
        return targets if len(targets) == 2 * len(CLUSTERS) and all(t["health"] == "up" for t in targets) else None

    targets = wait_for(all_up, timeout=90)
    assert targets, json.dumps(flower_targets(host), indent=1)
    urls = sorted(target["scrapeUrl"] for target in targets)
    assert urls == sorted(
        [
            "https://flower.molecule.test:443/metrics",
            "https://flower.molecule.test:443/metrics/queues",
            f"https://{OTHER}:443/flower/metrics",
            f"https://{OTHER}:443/flower/metrics/queues",
            # The second Flower of the prefix platform's machine: the same nginx, its own prefix.
            *(
                f"https://{OTHER}:443{HOST_VARS[name]['flower_url_prefix']}/metrics{path}"
                for name in FURTHER_INSTANCES
                for path in ("", "/queues")
            ),
        ]
    )
    assert {target["labels"]["instance"] for target in targets} == set(CLUSTERS)
    # Each Flower's series carry the cluster it watches (its host's flower_cluster, recorded by the flower role).
    assert {(target["labels"]["instance"], target["labels"]["cluster"]) for target in targets} == set(CLUSTERS.items())


def test_rules_and_config_pass_promtool_and_are_loaded(host: Any) -> None:
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
    assert host.run("promtool check rules /etc/prometheus/rules/flower.yml").rc == 0
    names = {rule["name"] for group in prometheus(host, "/api/v1/rules")["groups"] for rule in group["rules"]}
    assert {"FlowerDown", "FlowerWorkerOffline", "FlowerTooFewWorkersOnline", "FlowerBlind"} <= names
    assert {"FlowerTaskFailureRatioHigh", "FlowerQueueTooLong"} <= names


def panel_queries(cluster: str = ".*") -> list[tuple[str, str]]:
    """Each panel's queries as Grafana sends them with the cluster variable set (".*": All, its allValue)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$cluster", cluster))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


@pytest.fixture(scope="module")
def task_traffic(host: Any) -> None:
    """Tasks of each kind, in two rounds. Flower's task series start with its first event since its last start
    (earlier tests restart it), and a rate needs an increase between two scrapes of a series that exists: the
    first round makes the series, the second, once Prometheus has scraped them, the increase."""

    def one_round() -> None:
        for task, args in (("add", "[1, 2]"), ("add", "[3, 4]"), ("fail", "[]"), ("sleep", "[1]")):
            assert host.run("demo-worker-call %s %s", task, args).rc == 0

    def scraped() -> bool:
        wanted = {"task-succeeded", "task-failed"}
        events = prometheus(host, "/api/v1/query", query=f'flower_events_total{{instance="{INSTANCE}"}}')["result"]
        runtimes = prometheus(
            host, "/api/v1/query", query=f'flower_task_runtime_seconds_count{{instance="{INSTANCE}"}}'
        )
        seen = {one["metric"].get("type") for one in events}
        return wanted <= seen and any(one["metric"].get("task", "").endswith("sleep") for one in runtimes["result"])

    one_round()
    assert wait_for(scraped, timeout=60, interval=2), "Prometheus never scraped Flower's task series"
    one_round()


def series(result: list[dict[str, Any]], **labels: str) -> list[float]:
    """Values of the series whose labels end with the given values (task names carry their module)."""
    return [
        float(one["value"][1])
        for one in result
        if all(one["metric"].get(name, "").endswith(value) for name, value in labels.items())
    ]


# What each panel must show on this host after task_traffic (an answer alone proves nothing: `up == 0` is one).
PANEL_SHOWS: dict[str, tuple[str, Any]] = {
    "Flower up": ("every Flower up", lambda r: sorted(series(r)) == EVERY_FLOWER),
    "Workers online": ("a worker online on each Flower", lambda r: len(r) == len(CLUSTERS) and min(series(r)) >= 1),
    "Worker online state": ("a worker online", lambda r: 1.0 in series(r)),
    "Executing and prefetched tasks": ("a series per worker", lambda r: r and all("worker" in s["metric"] for s in r)),
    "Task events by type": ("succeeded tasks", lambda r: any(v > 0 for v in series(r, type="task-succeeded"))),
    "Task failure ratio (15m)": (
        "fail failing and add not",
        lambda r: any(v > 0 for v in series(r, task="fail")) and 0.0 in series(r, task="add"),
    ),
    "Task runtime p95": ("sleep([1]) taking a second or more", lambda r: any(v >= 1 for v in series(r, task="sleep"))),
    "Prefetch time": (
        "a series per worker and task",
        lambda r: r and all({"worker", "task"} <= set(s["metric"]) for s in r),
    ),
    "Queue length": ("the celery queue", lambda r: len(series(r, queue="celery")) == len(CLUSTERS)),
    "Queue exporter answering": ("every exporter answering", lambda r: sorted(series(r)) == EVERY_FLOWER),
    "Newest heartbeat age": ("a heartbeat in the last 30 s", lambda r: r and min(series(r)) < 30),
}


def test_every_dashboard_panel_has_an_expectation() -> None:
    assert {title for title, _ in panel_queries()} == set(PANEL_SHOWS)


def test_the_dashboards_cluster_variable_offers_each_cluster_and_narrows_every_panel(host: Any) -> None:
    """The dashboard's cluster variable lists the clusters Prometheus has (here a and b), every selector of every
    panel is filtered by it, and with one cluster chosen a panel shows that cluster's Flower alone."""
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "cluster"]
    offered = prometheus(host, "/api/v1/label/cluster/values", **{"match[]": 'up{job="flower"}'})
    assert variable["query"]["query"] == 'label_values(up{job="flower"}, cluster)'
    assert sorted(offered) == sorted(CLUSTERS.values()), offered
    for title, expr in panel_queries("$cluster"):
        assert expr.count('job="') == expr.count('cluster=~"$cluster"'), f"{title}: {expr}"
    (up,) = [expr for title, expr in panel_queries(CLUSTERS[OTHER]) if title == "Flower up"]
    shown = prometheus(host, "/api/v1/query", query=up)["result"]
    assert [one["metric"]["instance"] for one in shown] == [OTHER], shown


@pytest.mark.usefixtures("task_traffic")
@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_dashboard_panel_query_shows_this_hosts_state(host: Any, title: str, expr: str) -> None:
    what, shows = PANEL_SHOWS[title]

    def answer() -> list[dict[str, Any]]:
        return prometheus(host, "/api/v1/query", query=expr)["result"]

    assert wait_for(lambda: shows(answer()), timeout=90, interval=5), f"panel {title!r} should show {what}: {answer()}"
    # With every cluster chosen, no series merges two clusters' Flowers (a sum over both, a p95 of both, two
    # workers of the same name): each keeps its cluster, and the panel's legend names it.
    merged = [one["metric"] for one in answer() if not one["metric"].get("cluster")]
    assert not merged, f"panel {title!r} merges the clusters: {merged}"


def test_every_dashboard_legend_names_the_cluster() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    legends = {
        (panel["title"], target["legendFormat"]) for panel in dashboard["panels"] for target in panel.get("targets", [])
    }
    assert all("{{cluster}}" in legend for _, legend in legends), sorted(legends)


@pytest.fixture
def receiver(host: Any) -> Iterator[None]:
    # Not into /tmp: it is a tmpfs in the container, and docker cp writes beneath it, out of sight.
    subprocess.run(["docker", "cp", str(RECEIVER), f"{INSTANCE}:/var/tmp/alert_receiver.py"], check=True, timeout=60)
    host.run(f"rm -f {ALERTS_FILE}")
    start = host.run(
        "systemd-run --unit flowerops-test-alert-receiver --collect python3 /var/tmp/alert_receiver.py "
        f"--port {RECEIVER_PORT} --output {ALERTS_FILE} --lifetime 300"
    )
    assert start.rc == 0, start.stderr
    listening = wait_for(lambda: host.socket(f"tcp://127.0.0.1:{RECEIVER_PORT}").is_listening, timeout=30)
    assert listening, host.run("journalctl -u flowerops-test-alert-receiver --no-pager -n 20").stdout
    try:
        yield
    finally:
        host.run("systemctl stop flowerops-test-alert-receiver")


@pytest.fixture
def worker_stopped(host: Any) -> Iterator[None]:
    assert host.run("systemctl stop demo-worker.service").rc == 0
    try:
        yield
    finally:
        assert host.run("systemctl start demo-worker.service").rc == 0
        wait_until_healthy(host)


def alert_state(host: Any, name: str) -> str:
    alerts = prometheus(host, "/api/v1/alerts")["alerts"]
    states = [alert["state"] for alert in alerts if alert["labels"]["alertname"] == name]
    return "firing" if "firing" in states else (states[0] if states else "")


def delivered_alerts(host: Any, name: str) -> list[dict]:
    """The firing alerts of that name the webhook received."""
    lines = host.run(f"cat {ALERTS_FILE}").stdout.splitlines()
    return [
        alert
        for line in lines
        for alert in json.loads(line).get("alerts", [])
        if alert["labels"].get("alertname") == name and alert["status"] == "firing"
    ]


def delivered(host: Any, name: str) -> bool:
    return bool(delivered_alerts(host, name))


def test_worker_offline_alert_fires_and_reaches_the_webhook(host: Any, receiver: None, worker_stopped: None) -> None:
    seen = set()

    def firing() -> bool:
        seen.add(alert_state(host, "FlowerWorkerOffline"))
        return "firing" in seen

    assert wait_for(firing, timeout=120, interval=2), f"FlowerWorkerOffline states seen: {seen}"
    assert "pending" in seen  # it waited its `for` duration first
    assert wait_for(lambda: delivered(host, "FlowerWorkerOffline"), timeout=90, interval=2), host.run(
        f"cat {ALERTS_FILE}; journalctl -u prometheus-alertmanager -n 30 --no-pager"
    ).stdout
    # The page names the cluster whose worker is gone, in its labels (for routing) and its summary.
    for alert in delivered_alerts(host, "FlowerWorkerOffline"):
        cluster = CLUSTERS[alert["labels"]["instance"]]
        assert alert["labels"]["cluster"] == cluster, alert["labels"]
        assert alert["annotations"]["summary"].startswith(f"Cluster {cluster}: Worker "), alert["annotations"]
    # The on-call procedure (docs/on-call.md, "Alerts"), as written: see the alert with amtool on the host,
    # silence it, and lift the silence.
    amtool = "amtool --alertmanager.url=http://127.0.0.1:9093"
    listed = host.run(f"{amtool} alert query alertname=FlowerWorkerOffline")
    assert listed.rc == 0 and "FlowerWorkerOffline" in listed.stdout, listed.stdout + listed.stderr
    silence = host.run(f"{amtool} silence add alertname=FlowerWorkerOffline --duration=10m --comment='worker retired'")
    assert silence.rc == 0 and silence.stdout.strip(), silence.stderr
    query = f"{amtool} alert query --silenced alertname=FlowerWorkerOffline"
    silenced = wait_for(lambda: "FlowerWorkerOffline" in host.run(query).stdout, timeout=20)
    assert silenced, host.run(f"{amtool} silence query").stdout
    assert host.run(f"{amtool} silence expire %s", silence.stdout.strip()).rc == 0
    assert silence.stdout.strip() not in host.run(f"{amtool} silence query -q").stdout


# Damages the watcher must see on its own (item: damage, repair); the checklist test shows each failing its item.
WATCHED = {
    "4": ("ufw --force disable", "ufw --force enable"),
    "5": ("systemctl disable flower.service", "systemctl enable flower.service"),
    "11": ("systemctl stop flower-backup.timer", "systemctl start flower-backup.timer"),
}


def watched_items(host: Any) -> dict[str, float]:
    """item -> flowerops_checklist_item_passing of this host, as Prometheus last scraped it."""
    result = prometheus(host, "/api/v1/query", query=f'flowerops_checklist_item_passing{{instance="{INSTANCE}"}}')
    return {sample["metric"]["item"]: float(sample["value"][1]) for sample in result["result"]}


def checklist_alerts(host: Any) -> dict[str, str]:
    """item -> state of this host's FlowerChecklistItemFailing alerts in Alertmanager (its v2 API, amtool's)."""
    url = "http://127.0.0.1:9093/api/v2/alerts?filter=alertname%3D%22FlowerChecklistItemFailing%22"
    cmd = host.run("python3 -c %s %s", GET_ON_HOST, url)
    assert cmd.rc == 0, cmd.stderr + service_diagnostics(host, "prometheus-alertmanager.service")
    alerts = [alert for alert in json.loads(cmd.stdout) if alert["labels"].get("instance") == INSTANCE]
    return {alert["labels"]["item"]: alert["status"]["state"] for alert in alerts}


def test_the_watcher_alerts_on_damage_with_nobody_running_ansible(host: Any, receiver: None) -> None:
    first_platform_only(host)
    every = {"1", "2", "3", "4", "5", "6", "7", "8", "11", "12", "13", "15"}
    passing = wait_for(lambda: (items := watched_items(host)) and set(items) == every and set(items.values()) == {1.0})
    assert passing, watched_items(host)
    for damage, _repair in WATCHED.values():
        assert host.run(damage).rc == 0, damage
    try:
        fired = wait_for(lambda: set(checklist_alerts(host)) == set(WATCHED), timeout=120, interval=3)
        assert fired, (checklist_alerts(host), watched_items(host))
        assert set(checklist_alerts(host).values()) == {"active"}
        assert wait_for(lambda: delivered(host, "FlowerChecklistItemFailing"), timeout=60, interval=2)
    finally:
        for _damage, repair in WATCHED.values():
            host.run(repair)
    assert wait_for(lambda: not checklist_alerts(host), timeout=120, interval=3), checklist_alerts(host)
    assert set(watched_items(host).values()) == {1.0}
    # Read-only, and nothing secret in what it wrote to the journal.
    journal = host.run("journalctl -u flowerops-checklist-watch --no-pager -o cat -n 200").stdout
    assert "item 4 FAIL: Firewall rules configured: ufw is not active" in journal
    for secret in SECRETS:
        assert secret not in journal


# The disk-full drill: Flower's database and the backups on one small filesystem of their own, as on a host whose
# /var holds both, then that filesystem really full (a file written until ENOSPC). Small: what they hold and 600 MiB,
# room for the backup's own free-space rule (flower_backup_min_free_mb, 512 MiB) once the file is gone. For the
# drill, Flower saves every 5 s (60 s by default; other tests fingerprint its database): item 7 fails a save older
# than two intervals, so the failing saves show in seconds.
VOLUME = "/srv/flowerops-small-volume"
DATA, BACKUPS, FILLER = "/var/lib/flower", "/var/backups/flower", "/srv/flowerops-small-volume/data/filler"
FLOWER_LOG = "/var/log/flower/flower.log"
FLOWER_CONF, CONF_KEPT = "/etc/flower/flowerconfig.py", "/root/flowerconfig.py"
MOVE_ONTO_SMALL_VOLUME = f"""set -e
systemctl stop flower
cp -a {FLOWER_CONF} {CONF_KEPT}
sed -i 's/^state_save_interval = .*/state_save_interval = 5000/' {FLOWER_CONF}
mkdir -p {VOLUME}
used=$(du -sk {DATA} {BACKUPS} | awk '{{kib += $1}} END {{print kib}}')
mount -t tmpfs -o size=$((used + 600 * 1024))k,mode=0755 flowerops-small-volume {VOLUME}
cp -a {DATA} {VOLUME}/data
cp -a {BACKUPS} {VOLUME}/backups
mount --bind {VOLUME}/data {DATA}
mount --bind {VOLUME}/backups {BACKUPS}
systemctl start flower
"""
# Back where they were, with what Flower and the backups wrote meanwhile, and Flower's own settings.
MOVE_BACK = f"""systemctl stop flower
rm -f {FILLER} {VOLUME}/data/flower.db.tmp*
umount {DATA} {BACKUPS}
cp -a {VOLUME}/data/. {DATA}/
cp -a {VOLUME}/backups/. {BACKUPS}/
umount {VOLUME}
cp -a {CONF_KEPT} {FLOWER_CONF} && rm {CONF_KEPT}
systemctl start flower
"""


@pytest.fixture
def small_volume(host: Any) -> Iterator[None]:
    first_platform_only(host)  # the prefix changes none of it
    moved = host.run(MOVE_ONTO_SMALL_VOLUME)
    try:
        assert moved.rc == 0, moved.stderr
        wait_until_healthy(host)
        yield
    finally:
        back = host.run(MOVE_BACK)
        assert back.rc == 0, back.stderr
        wait_until_healthy(host)


def archive_sums(host: Any) -> str:
    return host.check_output(f"cd {BACKUPS} && sha256sum flower-*.tar.gz")


# How a failed save reads in Flower's log: gdbm's OSError (Debian 12), SQLite's own words (Debian 13's dbm.sqlite3).
FULL_DISK_SAID = ("No space left on device", "database or disk is full")


def test_a_full_volume_makes_saves_and_backups_fail_loudly_and_loses_nothing(
    host: Any, receiver: None, small_volume: None
) -> None:
    """Flower keeps serving; its failing saves (checklist item 7) and the refused backup (item 11) alert with nobody
    running Ansible, the journal and Flower's log say why; every archive made before stays as it was; once space
    returns, the next save and the next backup succeed and the alerts clear."""
    # From a host the watcher passes whole, with no checklist alert left from an earlier test.
    every_pass = wait_for(lambda: set(watched_items(host).values()) == {1.0} and not checklist_alerts(host), timeout=90)
    assert every_pass, (watched_items(host), checklist_alerts(host))
    archived = archive_sums(host)
    host.run(f"dd if=/dev/zero of={FILLER} bs=64k")  # until the volume is full: its exit status is ENOSPC's
    filled = float(host.check_output("date +%s.%N"))
    assert host.check_output(f"df --output=avail -B1 {VOLUME} | tail -1").strip() == "0"
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    logged = int(host.check_output(f"wc -l < {FLOWER_LOG}"))
    try:
        assert host.run("systemctl start flower-backup.service").rc != 0, "a backup ran on a full volume"
        errors = host.run("journalctl -u flower-backup -p err --since %s --no-pager -o cat", since).stdout
        assert "refusing to back up" in errors, errors
        assert archive_sums(host) == archived, "a refused backup changed the archives"

        def save_failed() -> bool:
            return any(said in host.run(f"tail -n +{logged + 1} {FLOWER_LOG}").stdout for said in FULL_DISK_SAID)

        failed_save = wait_for(save_failed, timeout=30)
        assert failed_save, host.run(f"tail -n +{logged + 1} {FLOWER_LOG}").stdout[-2000:]
        for path in ("/", "/tasks", "/api/workers"):
            status, _ = fetch(host, path)
            assert status == 200, f"{path} answered HTTP {status} on a full volume"
        fired = wait_for(lambda: {"7", "11"} <= set(checklist_alerts(host)), timeout=120, interval=3)
        assert fired, (checklist_alerts(host), watched_items(host))
        record("disk_full_alerts_s", time.time() - filled)
        assert wait_for(lambda: delivered(host, "FlowerChecklistItemFailing"), timeout=60, interval=2)
        # What the watcher wrote to the journal, item by item.
        seen = (
            "item 7 FAIL: Database persistence enabled: Flower's last save is",
            "item 11 FAIL: Backup strategy for flower.db: flower-backup.service failed its last run",
        )
        journal = "journalctl -u flowerops-checklist-watch --no-pager -o cat --since %s"
        watched = wait_for(lambda: all(line in (out := host.run(journal, since).stdout) for line in seen) and out)
        assert watched, host.run(journal, since).stdout[-3000:]
    finally:
        host.run(f"rm -f {FILLER}")
    freed = time.monotonic()
    saved = wait_for(lambda: float(host.check_output(f"stat -c %Y {DATA}/flower.db")) > filled, timeout=30)
    assert saved, "Flower did not save once space returned"
    record("disk_full_saved_again_s", time.monotonic() - freed)
    assert archive_sums(host) == archived, "an archive made before the volume filled is gone or changed"
    assert host.run("systemctl start flower-backup.service").rc == 0, host.run(
        "journalctl -u flower-backup --no-pager -n 20 -o cat"
    ).stdout
    assert wait_for(lambda: not checklist_alerts(host), timeout=120, interval=3), checklist_alerts(host)
