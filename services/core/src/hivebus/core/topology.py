"""Create the streams, consumers, buckets and object store hivebus needs; safe at every start."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError

from hivebus.contracts import subjects
from hivebus.core.logging import get_logger
from hivebus.core.settings import Settings

log = get_logger(__name__)


def stream_configs(settings: Settings, replicas: int = 1) -> list[StreamConfig]:
    """The streams: submissions, work (work-queue retention) and events, all on file storage."""

    def stream(
        name: str,
        subject: str,
        retention: RetentionPolicy,
        max_age: float | None,
        *,
        schedules: bool | None = None,
    ) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject],
            retention=retention,
            max_age=max_age,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=settings.dedup_window_s,
            allow_msg_schedules=schedules,
        )

    return [
        stream(
            subjects.TASKS_STREAM,
            subjects.SUBMIT,
            RetentionPolicy.LIMITS,
            settings.events_max_age_s,
        ),
        stream(subjects.WORK_STREAM, subjects.WORK_ALL, RetentionPolicy.WORK_QUEUE, None),
        stream(
            subjects.EVENTS_STREAM,
            subjects.EVENTS_ALL,
            RetentionPolicy.LIMITS,
            settings.events_max_age_s,
        ),
        # Deadlines are scheduled messages here: they fire after any restart.
        stream(
            subjects.CONTROL_STREAM,
            subjects.CONTROL_ALL,
            RetentionPolicy.LIMITS,
            settings.events_max_age_s,
            schedules=True,
        ),
        stream(subjects.DLQ_STREAM, subjects.DLQ_ALL, RetentionPolicy.LIMITS, None),
        stream(
            subjects.KNOWLEDGE_STREAM, subjects.KNOWLEDGE_WRITE, RetentionPolicy.WORK_QUEUE, None
        ),
        stream(
            subjects.ADVISORIES_STREAM,
            subjects.MAX_DELIVERIES_ADVISORY,
            RetentionPolicy.LIMITS,
            settings.events_max_age_s,
        ),
    ]


def _pull_consumer(durable: str, subject: str, ack_wait: float, max_deliver: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=1000,
    )


def orchestrator_max_deliver(settings: Settings) -> int:
    """Deliveries of one message to the orchestrator before the server gives up on it."""
    return settings.work_max_deliver * 4


def orchestrator_consumers(settings: Settings) -> list[tuple[str, ConsumerConfig]]:
    """Durable pull consumers of the orchestrator: submissions, results, controls, advisories."""
    max_deliver = orchestrator_max_deliver(settings)
    return [
        (
            consumer.stream,
            _pull_consumer(
                consumer.durable, consumer.subject, settings.orchestrator_ack_wait_s, max_deliver
            ),
        )
        for consumer in subjects.orchestrator_inputs()
    ]


def agent_consumer(settings: Settings, role: str) -> tuple[str, ConsumerConfig]:
    """The durable pull consumer shared by every replica of one role."""
    return subjects.WORK_STREAM, _pull_consumer(
        subjects.agent_consumer(role),
        subjects.work(role),
        settings.work_ack_wait_s,
        settings.work_max_deliver,
    )


async def ensure_streams(
    js: JetStreamContext, settings: Settings, replicas: int | None = None
) -> None:
    """Create every stream, or update it to the current configuration."""
    for config in stream_configs(settings, replicas or settings.replicas):
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream_created", stream=config.name)
        else:
            await js.update_stream(config)


async def ensure_consumers(
    js: JetStreamContext, consumers: list[tuple[str, ConsumerConfig]]
) -> None:
    """Create (or update) durable consumers."""
    for stream, config in consumers:
        await js.add_consumer(stream, config)


async def ensure_buckets(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the task-state and run-checkpoint KV buckets on file storage (idempotent)."""
    for bucket in (subjects.TASKS_BUCKET, subjects.RUNS_BUCKET, subjects.KNOWLEDGE_BUCKET):
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
                max_value_size=8 * 1024 * 1024,
            )
        )


def object_store_config(replicas: int = 1) -> ObjectStoreConfig:
    """The `artifacts` object store: file storage and no expiry (task state refers to it).

    The size of one object is bounded by `hivebus.core.artifacts.MAX_OBJECT_BYTES`.
    """
    return ObjectStoreConfig(
        bucket=subjects.ARTIFACTS_BUCKET,
        description="Contents too large for one message, passed by reference.",
        storage=StorageType.FILE,
        replicas=replicas,
    )


async def ensure_object_store(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the `artifacts` object store unless it exists (an existing one is kept as is).

    Guarded because the server refuses to create a bucket again with another configuration.
    """
    try:
        await js.object_store(subjects.ARTIFACTS_BUCKET)
    except BucketNotFoundError:
        await js.create_object_store(
            subjects.ARTIFACTS_BUCKET, config=object_store_config(replicas)
        )
        log.info("object_store_created", bucket=subjects.ARTIFACTS_BUCKET)


async def provision(
    js: JetStreamContext, settings: Settings, roles: list[str], replicas: int | None = None
) -> None:
    """Everything at once: streams, buckets, the object store, every consumer."""
    replicas = replicas or settings.replicas
    await ensure_streams(js, settings, replicas)
    await ensure_buckets(js, replicas)
    await ensure_object_store(js, replicas)
    consumers = orchestrator_consumers(settings)
    consumers.extend(agent_consumer(settings, role) for role in roles)
    consumers.append(
        (
            subjects.KNOWLEDGE_STREAM,
            _pull_consumer(
                subjects.KNOWLEDGE_WRITER_CONSUMER,
                subjects.KNOWLEDGE_WRITE,
                settings.orchestrator_ack_wait_s,
                settings.work_max_deliver * 4,
            ),
        )
    )
    await ensure_consumers(js, consumers)
