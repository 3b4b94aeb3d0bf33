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


# The protobuf message each topic carries (dead-letter topics carry their source's bytes unchanged).
SCHEMAS: dict[str, str] = {
    REGISTRY_EVENTS: "tessera.events.v1.RegistryEvent",
    SERVING_REQUESTS: "tessera.events.v1.InferenceRequest",
    SERVING_RESPONSES: "tessera.events.v1.InferenceResponse",
    PAYLOAD_LOGS: "tessera.events.v1.PayloadLog",
    DRIFT_EVENTS: "tessera.events.v1.DriftEvent",
    TRAINING_JOBS: "tessera.events.v1.TrainingJob",
    TRAINING_EVENTS: "tessera.events.v1.TrainingEvent",
    RETRIEVAL_SYNC: "tessera.events.v1.RetrievalSyncRecord",
    EVAL_REQUESTS: "tessera.events.v1.EvalRequest",
    EVAL_RESULTS: "tessera.events.v1.EvalResult",
}
