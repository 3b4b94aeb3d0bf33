"""The Kafka topics of DESIGN.md, in one place. Every consumer also has `<topic>.dlq`."""

REGISTRY_EVENTS = "tessera.registry.events"
SERVING_REQUESTS = "tessera.serving.requests"
SERVING_RESPONSES = "tessera.serving.responses"
PAYLOAD_LOGS = "tessera.payload.logs"
DRIFT_EVENTS = "tessera.drift.events"
TRAINING_JOBS = "tessera.training.jobs"
TRAINING_EVENTS = "tessera.training.events"
RETRIEVAL_SYNC = "tessera.retrieval.sync"
EVAL_REQUESTS = "tessera.eval.requests"
EVAL_RESULTS = "tessera.eval.results"

DLQ_SUFFIX = ".dlq"

TOPICS: tuple[str, ...] = (
    REGISTRY_EVENTS,
    SERVING_REQUESTS,
    SERVING_RESPONSES,
    PAYLOAD_LOGS,
    DRIFT_EVENTS,
    TRAINING_JOBS,
    TRAINING_EVENTS,
    RETRIEVAL_SYNC,
    EVAL_REQUESTS,
    EVAL_RESULTS,
)


def dlq(topic: str) -> str:
    return topic + DLQ_SUFFIX


def all_topics() -> tuple[str, ...]:
    """Every topic the mesh uses, dead-letter topics included."""
    return TOPICS + tuple(dlq(t) for t in TOPICS)
