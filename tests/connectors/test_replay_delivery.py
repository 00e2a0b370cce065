"""``repmon replay`` against a real Kafka: a row the broker did not acknowledge is never reported
as sent; the command exits non-zero naming the broker (it used to print its stats and exit 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from infra.kafka import ensure_topics

from ..conftest import ROOT, free_port

pytestmark = pytest.mark.integration

MAPPING = """
kind = "review"
source = "shop"
[columns]
native_id = "id"
text = "text"
rating = "stars"
occurred_at = "ts"
[time]
format = "epoch"
"""


def replay(tmp: Path, prefix: str, bootstrap: str, rows: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    (tmp / "m.toml").write_text(MAPPING)
    data = tmp / "d.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REPMON_KAFKA__TOPIC_PREFIX": prefix}
    cmd = [sys.executable, "-m", "cli.main", "replay", str(data), "-m", str(tmp / "m.toml")]
    cmd += ["--bootstrap", bootstrap, "--no-progress", "--json"]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


def rows(n: int, text_len: int = 20) -> list[dict[str, object]]:
    return [{"id": i, "text": "x" * text_len, "stars": 3, "ts": 1_700_000_000 + i} for i in range(n)]


def test_replay_delivers_and_reports(tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    r = replay(tmp_path, f"rp{unique}", kafka_bootstrap, rows(5))
    assert r.returncode == 0, r.stderr
    stats = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert stats["sent"] == 5 and stats["failed"] == 0
    c = KafkaConsumer(
        f"rp{unique}.raw", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        assert len([m for m in c]) == 5
    finally:
        c.close()


def test_records_the_broker_refuses_make_replay_exit_non_zero_naming_the_broker(
    tmp_path: Path, kafka_bootstrap: str, unique: str
) -> None:
    prefix = f"rp{unique}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:  # the broker accepts the connection but refuses every record over 200 bytes
        admin.create_topics([NewTopic(f"{prefix}.raw", 1, 1, topic_configs={"max.message.bytes": "200"})])
    finally:
        admin.close()
    r = replay(tmp_path, prefix, kafka_bootstrap, rows(3, text_len=500))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"not acknowledged by Kafka at {kafka_bootstrap}" in r.stderr and "Traceback" not in r.stderr
    out = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert out["failed"] == 3 and "Message size too large" in out["error"]


def test_an_unreachable_broker_is_named_with_the_fix_and_no_traceback(tmp_path: Path, unique: str) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    r = replay(tmp_path, f"rp{unique}", address, rows(2))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"Kafka at {address} is not reachable" in r.stderr and "--bootstrap" in r.stderr
    assert "Traceback" not in r.stderr


def test_kafka_sink_flush_raises_for_lost_records_and_counts_acks(kafka_bootstrap: str, unique: str) -> None:
    from connectors.base import DeliveryError, KafkaSink

    ensure_topics(kafka_bootstrap, [f"rp{unique}.ok"], 1)  # created and led: not raced by auto-creation
    ok = KafkaSink(kafka_bootstrap, f"rp{unique}.ok")
    try:
        for i in range(3):
            ok.send_bytes(b"v%d" % i, None)
        ok.flush()
        assert (ok.acked, ok.failed) == (3, 0)
    finally:
        ok.close()
    address = f"127.0.0.1:{free_port()}"
    gone = KafkaSink(address, f"rp{unique}.gone", api_version=(2, 8), max_block_ms=300)
    try:
        for i in range(50):  # one metadata wait for the first, not 50
            gone.send_bytes(b"v%d" % i, None)
        assert gone.failing
        with pytest.raises(DeliveryError, match=f"50 of 50 records were not acknowledged by Kafka at {address}"):
            gone.flush(timeout=5)
        assert gone.failed == 50 and not gone.failing  # the next batch starts clean
    finally:
        gone.close(timeout=1)
