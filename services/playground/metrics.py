"""The playground's Prometheus metrics (served on :9107)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("tessera_playground_requests_total", "HTTP requests to the playground", ["route", "status"])
GENERATIONS = Counter(
    "tessera_playground_generations_total", "Generations streamed through the playground", ["mode", "outcome"]
)
FIRST_TOKEN = Histogram(
    "tessera_playground_time_to_first_token_seconds",
    "Time from the playground's call to the first streamed token",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
ASSESSMENTS = Counter("tessera_playground_assessments_total", "Votes and labels sent to evaluation", ["kind"])
