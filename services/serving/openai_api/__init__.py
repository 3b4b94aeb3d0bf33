"""The OpenAI-compatible HTTP API: a thin front end over the same core as gRPC, OIP and Kafka."""
