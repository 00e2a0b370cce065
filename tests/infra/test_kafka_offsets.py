"""The offset look-ups the leader and the workers make, against a real broker."""

from __future__ import annotations

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from infra.kafka import CommittedOffsets, EndOffsets, ensure_topics

pytestmark = pytest.mark.integration


def test_committed_offsets_are_the_groups_and_end_offsets_the_topics(kafka_bootstrap: str, unique: str) -> None:
    topic, group = f"offs{unique}", f"offs{unique}.group"
    ensure_topics(kafka_bootstrap, [topic], partitions=3)
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for p, n in ((0, 4), (1, 7)):  # partition 2 stays empty
        for i in range(n):
            producer.produce(topic, b"x%d" % i, partition=p)
    assert producer.flush(30) == 0
    ends = EndOffsets(kafka_bootstrap, topic, 3)
    commits = CommittedOffsets(kafka_bootstrap, group, topic)
    try:
        assert ends() == {0: 4, 1: 7, 2: 0}
        assert commits([0, 1, 2]) == {0: None, 1: None, 2: None}  # the group has committed nothing yet
        # the group commits partition 1 up to 5 (the next offset to read), as a worker does
        member = confluent_kafka.Consumer(
            {"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            member.commit(offsets=[confluent_kafka.TopicPartition(topic, 1, 5)], asynchronous=False)
        finally:
            member.close()
        assert commits([0, 1]) == {0: None, 1: 5}
        assert commits([]) == {}
        # asking does not make it a member: the group it reads has no one in it
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        assert list(described.members) == []
    finally:
        ends.close()
        commits.close()


def test_committed_offsets_name_the_address_when_no_broker_answers(unique: str) -> None:
    commits = CommittedOffsets("127.0.0.1:1", f"offs{unique}", f"offs{unique}", timeout=1.0)
    try:
        with pytest.raises(confluent_kafka.KafkaException):
            commits([0])
    finally:
        commits.close()
