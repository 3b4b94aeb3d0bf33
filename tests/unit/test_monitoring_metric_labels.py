"""Prometheus labels from client-chosen names stay bounded; real endpoints keep their own."""

from services.monitoring.metrics import BoundedLabels, status_label


def test_random_names_on_refused_calls_share_one_label_and_answered_endpoints_keep_theirs():
    labels = BoundedLabels(limit=3, unvouched_limit=2)
    assert [labels(f"random-{i}", vouched=False) for i in range(5)] == [
        "random-0",
        "random-1",
        "other",
        "other",
        "other",
    ]
    assert labels("random-1", vouched=False) == "random-1"
    # An endpoint that answered is labelled by name even after the unvouched budget is spent.
    assert labels("prod-chat") == "prod-chat"
    assert labels("prod-chat", vouched=False) == "prod-chat"
    assert [labels(name) for name in ("a", "b", "c")] == ["a", "b", "other"]


def test_statuses_other_than_grpc_codes_are_counted_as_other():
    assert status_label("PERMISSION_DENIED") == "PERMISSION_DENIED"
    assert status_label("x" * 60) == "OTHER"
