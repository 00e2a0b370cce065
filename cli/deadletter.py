"""``repmon deadletter replay``: re-send the dead letters whose cause was fixed to the raw topic.

A dead letter keeps the message (redacted, cut to 64 KiB) and why it was refused. Once the cause
is fixed (a source's clock, ``windows.backfill_since`` for history, a mapping for a source's own
shape, an outage that is over), the operator filters the dead letters by stage, error kind or
reason, and this command re-validates each one against the record contract and re-sends those
that now pass. Nothing is re-sent twice: each replayed message's SHA-256 is recorded in Redis
(``<prefix>:deadletter:replayed``), and event ids are stable, so even a replay cut short between
sending and recording is counted once downstream.

It reads the topic up to its end as of the start, so dead letters that a replay causes again are
left for the next run instead of looping.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

__all__ = ["deadletter_app", "replay_dead_letters"]

deadletter_app = typer.Typer(no_args_is_help=True, help="Inspect and re-send dead letters.")

#: Stages whose dead letters are raw input (the rest came from other topics: labels, incidents).
RAW_STAGES = ("validate", "horizon", "enrich", "count", "publish")


def _select(rec: dict[str, Any], stages: list[str], errors: list[str], reason: str | None) -> bool:
    """Whether a dead letter passes the filters (each list: any of; ``reason``: a substring, any case).

    >>> d = {"stage": "horizon", "error": "EventTimeOutOfRange", "reason": "occurred_at is 3.0 days old"}
    >>> _select(d, ["horizon"], [], "DAYS OLD"), _select(d, ["validate"], [], None)
    (True, False)
    """
    if stages and rec.get("stage") not in stages:
        return False
    if errors and rec.get("error") not in errors:
        return False
    return not (reason and reason.lower() not in str(rec.get("reason", "")).lower())


def replay_dead_letters(
    bootstrap: str,
    deadletter_topic: str,
    raw_topic: str,
    redis_url: str,
    key_prefix: str,
    *,
    stages: list[str],
    errors: list[str],
    reason: str | None,
    mapping_path: Path | None = None,
    dry_run: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Replay the matching dead letters; returns the counts (and why the rest were not re-sent)."""
    import redis
    from kafka import KafkaConsumer, TopicPartition
    from pydantic import ValidationError

    from connectors.base import KafkaSink
    from connectors.mapping import load_mapping, to_item
    from contract.records import parse_raw
    from streams.runtime import validation_reason

    mapping = load_mapping(mapping_path) if mapping_path else None
    counts: Counter[str] = Counter()
    still_invalid: Counter[str] = Counter()
    done_key = f"{key_prefix}:deadletter:replayed"
    r = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    sink = None if dry_run else KafkaSink(bootstrap, raw_topic)
    try:
        parts = consumer.partitions_for_topic(deadletter_topic) or set()
        tps = [TopicPartition(deadletter_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending and (limit is None or counts["resent"] + counts["would_resend"] < limit):
            for tp, msgs in consumer.poll(timeout_ms=1000, max_records=500).items():
                batch: list[tuple[str, bytes, bytes | None]] = []
                for m in msgs:
                    if m.offset >= ends[tp]:
                        break
                    counts["read"] += 1
                    try:
                        rec = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        counts["not_a_dead_letter"] += 1
                        continue
                    if not isinstance(rec, dict) or not _select(rec, stages, errors, reason):
                        continue
                    counts["matched"] += 1
                    if rec.get("stage") not in RAW_STAGES:
                        counts["not_raw_input"] += 1  # labels, incidents: not the raw topic's to take back
                        continue
                    if rec.get("payload_truncated"):
                        counts["truncated"] += 1  # only the first 64 KiB were kept: it cannot be rebuilt
                        continue
                    payload = str(rec.get("payload", "")).encode()
                    if mapping is not None:
                        try:
                            item = to_item(orjson.loads(payload), mapping)
                        except orjson.JSONDecodeError as exc:
                            still_invalid[f"not JSON: {exc}"[:120]] += 1
                            continue
                        payload = orjson.dumps(item, default=str) if isinstance(item, dict) else payload
                    try:
                        record = parse_raw(payload)
                    except (ValidationError, ValueError) as exc:
                        still_invalid[validation_reason(exc)[:120]] += 1
                        continue
                    digest = str(rec.get("payload_sha256") or hashlib.sha256(payload).hexdigest())
                    batch.append((digest, payload, KafkaSink.key_of(record)))
                if consumer.position(tp) >= ends[tp]:  # read up to the end as of the start
                    pending.discard(tp)
                if not batch:
                    continue
                seen = r.hmget(done_key, [d for d, _, _ in batch])
                fresh = [b for b, s in zip(batch, seen, strict=True) if s is None]
                counts["already_replayed"] += len(batch) - len(fresh)
                if limit is not None:
                    fresh = fresh[: max(0, limit - counts["resent"] - counts["would_resend"])]
                if sink is None:
                    counts["would_resend"] += len(fresh)
                    continue
                for _, payload, key in fresh:
                    sink.send_bytes(payload, key)
                sink.flush(timeout=30)  # raises DeliveryError unless the broker acknowledged every one
                if fresh:
                    r.hset(done_key, mapping={d: "1" for d, _, _ in fresh})
                counts["resent"] += len(fresh)
    finally:
        consumer.close()
        if sink is not None:
            sink.close(timeout=10)
        r.close()
    out: dict[str, Any] = {k: counts.get(k, 0) for k in ("read", "matched", "resent", "already_replayed")}
    out.update({k: v for k, v in counts.items() if k not in out})
    out["still_invalid"] = sum(still_invalid.values())
    out["still_invalid_reasons"] = dict(still_invalid.most_common(10))
    return out


@deadletter_app.command("replay")
def replay_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML (as for the worker).")] = None,
    stage: Annotated[
        list[str], typer.Option("--stage", help=f"Only this stage (repeatable): {', '.join(RAW_STAGES)}.")
    ] = [],  # noqa: B006
    error: Annotated[
        list[str], typer.Option("--error", help="Only this error kind (repeatable), e.g. EventTimeOutOfRange.")
    ] = [],  # noqa: B006
    reason: Annotated[str | None, typer.Option(help="Only reasons containing this text (any case).")] = None,
    mapping: Annotated[
        Path | None, typer.Option("--mapping", "-m", help="Map each payload through a replay mapping first.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be re-sent; send nothing.")] = False,
    limit: Annotated[int | None, typer.Option(help="Re-send at most N.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as one JSON line.")] = False,
) -> None:
    """Re-validate the matching dead letters and re-send those that pass to the raw topic (once)."""
    from rich.markup import escape

    from cli.main import _kafka_or_exit, _redis_or_exit, _settings, err
    from connectors.base import DeliveryError
    from contract.records import TOPICS

    bad = [s for s in stage if s not in (*RAW_STAGES, "labels", "dispatch")]
    if bad:
        err.print(f"[red]--stage {escape(bad[0])!r} is not a stage[/red]: use one of {', '.join(RAW_STAGES)}")
        raise typer.Exit(2)
    if mapping is not None and not mapping.exists():
        err.print(f"[red]--mapping {escape(str(mapping))} does not exist[/red]: pass a mapping TOML file")
        raise typer.Exit(2)
    settings = _settings(config)
    _redis_or_exit(settings)
    _kafka_or_exit(settings.kafka.bootstrap, settings, [settings.topic(t) for t in TOPICS], "")
    assert settings.redis.url is not None  # checked above
    try:
        out = replay_dead_letters(
            settings.kafka.bootstrap,
            settings.topic("deadletter"),
            settings.topic("raw"),
            settings.redis.url,
            settings.redis.key_prefix,
            stages=stage,
            errors=error,
            reason=reason,
            mapping_path=mapping,
            dry_run=dry_run,
            limit=limit,
        )
    except ValueError as exc:  # a bad mapping file
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except DeliveryError as exc:
        err.print(
            f"[red]replay stopped: {escape(str(exc))}[/red]; check the broker and run it again: what was "
            "acknowledged is recorded and not re-sent"
        )
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(json.dumps(out))
    else:
        err.print(out)
