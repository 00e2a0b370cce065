"""Faults injected into real workers on Apache Kafka and redis-server.

- poison input (a megabyte of 0xFF, half a megabyte of quotes, a megabyte of text, an infinite
  amount, events dated 1970 and 2100) never stops a worker: each goes to the dead letters, small,
  and every good event after it is enriched and counted;
- a Redis that dies and comes back (with its append-only file) is waited out: the worker stays up
  and the windows count every event exactly once;
- a worker killed with SIGKILL in the middle of a stream, beside a second one: no event lost or
  counted twice, and the crisis in that stream is one incident thread;
- a worker that stalls (SIGSTOP) right after reporting its partition caught up, while a backlog is
  written to both partitions: no bucket is judged before the stalled partition's half is counted
  (without the leader's end-offset check, buckets were judged with 150 of 300 events).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from kafka import KafkaProducer

from connectors.base import KafkaSink
from connectors.demo import generate
from contract.records import TOPICS, DeadLetter
from infra.kafka import TopicTail, ensure_topics
from infra.settings import load_settings
from tools.stack import RedisServer, WorkerProcess, pings, wait_until, worker_env

pytestmark = pytest.mark.integration


def topics_for(bootstrap: str, prefix: str) -> dict[str, str]:
    topics = {t: f"{prefix}.{t}" for t in TOPICS}
    ensure_topics(bootstrap, topics.values(), 2)
    return topics


def mention(i: int, when: datetime, brand: str = "Northwind") -> dict[str, Any]:
    return {
        "kind": "mention",
        "event_id": f"f:{i}",
        "source": "fault-test",
        "brand": brand,
        "text": f"{brand} flight {i} was fine",
        "occurred_at": when.isoformat(),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health(port: int) -> tuple[int, dict[str, Any]]:
    """The worker's /healthz: status and document (0 while nothing answers)."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


def listening(port: int) -> set[str]:
    """The addresses a socket listens on at ``port`` (from /proc/net/tcp and tcp6)."""
    out: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            host, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(host)
            # the kernel writes each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out.add(str(ipaddress.ip_address(words)) if v6 else str(ipaddress.IPv4Address(words)))
    return out


def test_poison_input_never_stops_a_worker(kafka_bootstrap: str, redis_url: str, unique: str) -> None:
    prefix = f"fp{unique}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-faults-"))
    topics = topics_for(kafka_bootstrap, prefix)
    now = datetime.now(UTC)
    poison = [
        b"\xff" * 1_000_000,
        orjson.dumps({"kind": "mention", "text": '"' * 450_000}),
        orjson.dumps({**mention(0, now), "text": "x" * 990_000}),
        orjson.dumps(
            {
                "kind": "purchase",
                "event_id": "p:1",
                "source": "shop",
                "order_id": "o",
                "status": "paid",
                "brand": "Northwind",
                "occurred_at": now.isoformat(),
            }
        ).replace(b'"paid"', b'"paid","amount":1e999'),
        orjson.dumps(mention(-1, datetime(1970, 1, 1, tzinfo=UTC))),
        orjson.dumps(mention(-2, datetime(2100, 1, 1, tzinfo=UTC))),
    ]
    with WorkerProcess(worker_env(kafka_bootstrap, redis_url, prefix, workdir), workdir / "worker.log") as worker:
        prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2_000_000, linger_ms=5)
        for p in poison:
            prod.send(topics["raw"], p, key=b"northwind")
        for i in range(1, 201):
            prod.send(topics["raw"], orjson.dumps(mention(i, now - timedelta(seconds=i))), key=b"northwind")
        prod.flush()
        prod.close()
        tail = TopicTail(kafka_bootstrap, [topics["enriched"], topics["deadletter"]], keep=[topics["deadletter"]])
        try:
            ok = wait_until(
                lambda: (
                    not worker.alive()
                    or (tail.count(topics["enriched"]) >= 200 and tail.count(topics["deadletter"]) >= 6)
                ),
                120,
            )
            assert worker.alive(), worker.tail()
            assert ok, (tail.counts, worker.tail())
            letters = [DeadLetter.model_validate_json(v) for v in tail.values(topics["deadletter"])]
            assert sorted(d.stage for d in letters) == [
                "horizon",
                "horizon",
                "validate",
                "validate",
                "validate",
                "validate",
            ]
            assert all(len(d.payload) <= 64 * 1024 for d in letters)
            assert sum(d.payload_truncated for d in letters) >= 3
        finally:
            tail.stop()
        r = redis.Redis.from_url(redis_url)
        assert int(r.hget(f"{prefix}:stats", "counted") or 0) == 200
        r.close()
        # and a worker still consumes: SIGTERM stops it cleanly, in time
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(45)  # raises if SIGTERM did not stop it in time


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, RedisServer]]:
    """A redis-server of this test's own, with an append-only file, that the test may kill and restart."""
    assert shutil.which("redis-server"), "redis-server is not installed: `make test` installs it (infra/redis.sh)"
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.url, server
    finally:
        server.kill()


def test_a_redis_restart_is_waited_out_and_counts_stay_exact(
    kafka_bootstrap: str, own_redis: tuple[str, RedisServer], unique: str
) -> None:
    url, server = own_redis
    prefix = f"fr{unique}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-faults-"))
    topics = topics_for(kafka_bootstrap, prefix)
    now = datetime.now(UTC)
    sink = KafkaSink(kafka_bootstrap, topics["raw"])
    r = redis.Redis.from_url(url)
    counted = lambda: int(r.hget(f"{prefix}:stats", "counted") or 0) if pings(r) else -1  # noqa: E731
    metrics_port, web_port = free_port(), free_port()
    env = worker_env(kafka_bootstrap, url, prefix, workdir, REPMON_WORKER__METRICS_PORT=str(metrics_port))
    command = ["worker", "--loglevel", "info", "--web-port", str(web_port)]
    with WorkerProcess(env, workdir / "worker.log", command=command) as worker:
        # the worker's views are on the loopback only unless configured otherwise
        assert wait_until(lambda: health(metrics_port)[0] == 200 or not worker.alive(), 60), worker.tail()
        assert wait_until(lambda: listening(web_port) or not worker.alive(), 60), worker.tail()
        assert listening(web_port) == {"127.0.0.1"} and listening(metrics_port) == {"127.0.0.1"}
        for i in range(300):
            sink.send_any(mention(i, now - timedelta(seconds=300 - i), "Northwind" if i % 2 else "Skyline"))
        sink.flush()
        assert wait_until(lambda: counted() >= 300 or not worker.alive(), 90), worker.tail()
        server.kill()
        for i in range(300, 600):
            sink.send_any(mention(i, now - timedelta(seconds=600 - i), "Northwind" if i % 2 else "Skyline"))
        sink.flush()
        sink.close()
        # the worker meets the outage (its next batch cannot be counted): it retries, it does not
        # exit, and says so on /healthz
        assert wait_until(lambda: health(metrics_port)[0] == 503 or not worker.alive(), 30), worker.tail()
        assert health(metrics_port)[1]["dependencies"]["redis"] == "down" and worker.alive()
        server.start()
        assert wait_until(lambda: counted() >= 600 or not worker.alive(), 90), worker.tail()
        assert worker.alive(), worker.tail()
        assert wait_until(lambda: health(metrics_port)[0] == 200, 30), health(metrics_port)
        assert counted() == 600  # every event once: none lost in the outage, none counted twice after it
    r.close()


def test_sigkill_of_one_of_two_workers_loses_nothing_and_keeps_one_thread(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    prefix = f"fk{unique}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-faults-"))
    topics = topics_for(kafka_bootstrap, prefix)
    settings = load_settings(None)
    start = (datetime.now(UTC) - timedelta(minutes=150)).replace(second=0, microsecond=0)
    events = [
        e
        for e in generate(settings.entities, start=start, minutes=150, crisis_at_minute=110, crisis_minutes=20)
        if isinstance(e, dict)
    ]
    env = worker_env(kafka_bootstrap, redis_url, prefix, workdir)
    r = redis.Redis.from_url(redis_url)
    stats = lambda: {k.decode(): int(v) for k, v in r.hgetall(f"{prefix}:stats").items()}  # noqa: E731
    w1 = WorkerProcess(env, workdir / "worker1.log")
    w2 = WorkerProcess(env, workdir / "worker2.log")
    try:
        sink = KafkaSink(kafka_bootstrap, topics["raw"])
        half = len(events) // 2
        for e in events[:half]:
            sink.send_any(e)
        sink.flush()
        assert wait_until(lambda: stats().get("counted", 0) >= half // 3, 120), w1.tail()
        w1.proc.send_signal(signal.SIGKILL)  # mid-stream, nothing flushed, no goodbye to the group
        w1.proc.wait(10)
        for e in events[half:]:
            sink.send_any(e)
        sink.flush()
        sink.close()
        kept = [topics["incidents"], topics["enriched"], topics["signals"]]
        tail = TopicTail(kafka_bootstrap, kept, keep=kept)

        def enriched_ids() -> set[str]:
            return {json.loads(v)["event_id"] for v in tail.values(topics["enriched"])}

        try:
            assert wait_until(lambda: not w2.alive() or len(enriched_ids()) >= len(events), 180), (stats(), w2.tail())
            assert w2.alive(), w2.tail()
            assert wait_until(lambda: any(b'"northwind"' in v for v in tail.values(topics["incidents"])), 60), w2.tail()
            incidents = [json.loads(v) for v in tail.values(topics["incidents"])]
            enriched = {e["event_id"]: e for e in map(json.loads, tail.values(topics["enriched"]))}
            signals = [json.loads(v) for v in tail.values(topics["signals"])]
        finally:
            tail.stop()
        # every event counted once per entity it names; redeliveries after the kill were seen and skipped
        pairs = sum(
            len({m["key"] for m in e["entities"]} | ({e["entity"]} if e["entity"] else set()))
            for e in enriched.values()
        )
        assert wait_until(lambda: stats().get("counted", 0) >= pairs, 30)
        assert stats()["counted"] == pairs, (stats(), pairs)
        crisis = [i for i in incidents if i["entity"] == "northwind"]
        assert len({i["incident_id"] for i in crisis}) == 1, [(i["incident_id"], i["status"]) for i in crisis]
        assert crisis[0]["status"] == "open"
        assert len({(i["incident_id"], i["seq"]) for i in crisis if i["status"] == "open"}) == 1
        # the partitions the killed worker held were caught up before their buckets were judged: a
        # bucket judged while missing its events would have paged the brands with no crisis
        false = [
            (x["entity"], x["signal"], x["bucket_start"])
            for x in signals
            if x["severity"] != "info" and x["entity"].split("/")[0] != "northwind"
        ]
        assert false == [], false
        incidents_elsewhere = {i["entity"] for i in incidents if i["entity"].split("/")[0] != "northwind"}
        assert incidents_elsewhere == set(), incidents_elsewhere
    finally:
        w2.stop()
        w1.stop()
        r.close()


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A worker's /metrics: samples by name, each with its labels ({} while nothing answers)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_a_worker_stalled_after_reporting_caught_up_holds_the_buckets_until_its_partition_is_counted(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    """Two workers, one partition each. The one that is not the leader says its (empty) partition
    is caught up, then stalls (SIGSTOP) holding it, and a backlog is written to both partitions.
    The leader counts its own half within a second, but no bucket may be judged before the stalled
    partition's half is counted too (by the leader, once the group moved it there): judged with
    half its events, a bucket teaches the baselines half the volume and pages on the rest."""
    import confluent_kafka

    prefix = f"fs{unique}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-faults-"))
    topics = topics_for(kafka_bootstrap, prefix)
    r = redis.Redis.from_url(redis_url)
    counted = lambda: int(r.hget(f"{prefix}:stats", "counted") or 0)  # noqa: E731
    ports = [free_port(), free_port()]
    workers = []
    try:
        for i, port in enumerate(ports):  # one after the other: the first leads the group
            env = worker_env(kafka_bootstrap, redis_url, prefix, workdir, REPMON_WORKER__METRICS_PORT=str(port))
            workers.append(WorkerProcess(env, workdir / f"worker{i}.log"))
            assert wait_until(lambda p=port: health(p)[0] == 200, 90), workers[-1].tail()

        def raw_partitions(port: int) -> set[str]:
            lags = scrape(port).get("repmon_consumer_lag", [])
            return {lbl["partition"] for lbl, _ in lags if lbl.get("topic") == topics["raw"]}

        def ticking(port: int) -> bool:
            ticks = scrape(port).get("repmon_detect_tick_seconds", [])
            return bool(ticks) and ticks[0][1] > datetime.now(UTC).timestamp() - 2

        def settled() -> bool:
            held = [raw_partitions(p) for p in ports]
            return all(len(h) == 1 for h in held) and held[0] != held[1] and sum(map(ticking, ports)) == 1

        # a cold group under load can take a few rounds of rebalancing before it splits the partitions
        assert wait_until(settled, 150), (
            [raw_partitions(p) for p in ports],
            [w.alive() for w in workers],
            workers[0].tail(80),
            workers[1].tail(80),
        )
        lead = 0 if ticking(ports[0]) else 1
        stalled, held = workers[1 - lead], int(next(iter(raw_partitions(ports[1 - lead]))))
        # its empty partition reported caught up (offset 0), then the worker stops answering
        assert wait_until(lambda: r.hget(f"{prefix}:idle", str(held)) is not None, 30)
        stalled.proc.send_signal(signal.SIGSTOP)
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
        now = datetime.now(UTC)
        n = 300
        for i in range(n):
            brand = ("Northwind", "Skyline")[(i // 2) % 2]  # both brands on both partitions
            value = orjson.dumps(mention(i, now - timedelta(seconds=2 * (n - i)), brand))
            producer.produce(topics["raw"], value, brand.encode(), partition=i % 2)
        assert producer.flush(30) == 0

        def judged() -> float:
            return sum(v for _, v in scrape(ports[lead]).get("repmon_buckets_judged_total", []))

        first: list[tuple[float, int]] = []

        def all_counted() -> bool:
            j = judged()
            if j > 0 and not first:
                first.append((j, counted()))  # read after: it can only have grown since the judgement
            return bool(first) and counted() >= n

        # a string, so pytest prints all of it (it cuts any other object to 240 characters)
        assert wait_until(all_counted, 120, 0.05), (
            f"first judgement {first}, counted {counted()} of {n}; the leader's lag "
            f"{scrape(ports[lead]).get('repmon_consumer_lag')}, "
            f"events {scrape(ports[lead]).get('repmon_events_total')}; "
            f"its log: {workers[lead].tail(80)}"
        )
        stalled.proc.send_signal(signal.SIGCONT)
        assert first[0][1] == n, f"buckets judged with {first[0][1]} of {n} events counted"
        assert counted() == n
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGCONT)
            w.stop()
        r.close()
