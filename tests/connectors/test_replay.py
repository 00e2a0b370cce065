from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from connectors.base import ListSink
from connectors.replay import Replayer, load_mapping
from contract.records import parse_raw

from ..conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "infra" / "config" / "replay"


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def decode(sink: ListSink) -> tuple[list[dict[str, object]], list[bytes]]:
    good, bad = [], []
    for _, v in sink.items:
        try:
            parse_raw(v)
            good.append(orjson.loads(v))
        except ValueError:
            bad.append(v)
    return good, bad


def test_csv_mapping_with_derived_fields_and_bad_rows(tmp_path: Path) -> None:
    m = write(
        tmp_path,
        "m.toml",
        """
kind = "purchase"
source = "shop"
[columns]
order_id = "Invoice"
occurred_at = "When"
[time]
format = "%d/%m/%Y %H:%M"
timezone = "Europe/London"
[derived.status]
column = "Invoice"
prefix_map = { C = "cancelled" }
default = "placed"
[derived.amount]
product = ["Qty", "Price"]
abs = true
""",
    )
    data = write(
        tmp_path, "d.csv", "Invoice,When,Qty,Price\n1,01/07/2020 10:00,2,3.5\nC2,01/07/2020 11:00,-1,4\n3,nope,1,1\n"
    )
    sink = ListSink()
    stats = Replayer(load_mapping(m), [data], progress=False).run(sink)
    good, bad = decode(sink)
    assert stats.read == 3 and stats.invalid == 1 and len(good) == 2 and len(bad) == 1
    assert good[0]["status"] == "placed" and good[0]["amount"] == 7.0
    assert good[1]["status"] == "cancelled" and good[1]["amount"] == 4.0
    assert good[0]["occurred_at"] == "2020-07-01T09:00:00+00:00"  # BST applied, then UTC
    assert b"_error" in bad[0]  # passed on with its reason, never dropped
    again = ListSink()
    Replayer(load_mapping(m), [data], progress=False).run(again)
    assert [k for k, _ in again.items] == [k for k, _ in sink.items]
    assert decode(again)[0] == good  # stable ids on re-run


def test_jsonl_gz_epoch_and_pacing(tmp_path: Path) -> None:
    m = write(
        tmp_path,
        "m.toml",
        """
kind = "review"
source = "r"
[columns]
native_id = "id"
text = "t"
rating = "stars"
occurred_at = "ts"
[time]
format = "epoch"
""",
    )
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wb") as f:
        for i, ts in enumerate([1000, 1010, 1030]):
            f.write(orjson.dumps({"id": i, "t": "ok", "stars": 4.0, "ts": ts}) + b"\n")
        f.write(b"{broken json\n")
    slept: list[float] = []
    sink = ListSink()
    stats = Replayer(load_mapping(m), [p], speed=10, progress=False, sleep=slept.append).run(sink)
    good, bad = decode(sink)
    assert len(good) == 3 and good[0]["event_id"] == "r:0" and good[0]["rating"] == 4
    assert slept == [1.0, 2.0] and stats.invalid == 1 and bad == [b"{broken json"]


def test_bad_mapping_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="occurred_at"):
        load_mapping(write(tmp_path, "m.toml", 'kind = "mention"\nsource = "x"\n[columns]\ntext = "t"\n'))
    with pytest.raises(ValueError, match="kind"):
        load_mapping(write(tmp_path, "m2.toml", 'kind = "tweet"\nsource = "x"\n[columns]\noccurred_at = "t"\n'))


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ("airline_tweets", "twitter_us_airline_sentiment/Tweets.csv"),
        ("amazon_reviews_5core", "amazon_reviews_2018_5core_fashion_beauty/All_Beauty_5.json.gz"),
        ("amazon_alexa", "amazon_alexa_reviews/amazon_alexa.tsv"),
        ("online_retail", "uci_online_retail_dec2010_prefix/Online Retail.csv"),
    ],
)
def test_shipped_mappings_on_the_shared_data(mapping: str, path: str) -> None:
    data = SHARED_DATA / path
    assert data.exists(), f"{data} is missing from the shared data"
    sink = ListSink()
    Replayer(load_mapping(MAPPINGS / f"{mapping}.toml"), [data], limit=300, progress=False).run(sink)
    good, _ = decode(sink)
    assert len(good) >= 0.95 * 300
    if mapping == "airline_tweets":
        assert all(str(g["occurred_at"]).startswith("2015-02") for g in good) and "brand" not in good[0]
    if mapping.startswith("amazon"):
        assert all(1 <= int(g["rating"]) <= 5 for g in good)  # type: ignore[call-overload]
