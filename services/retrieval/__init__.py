"""Retrieval: vector indexes on pgvector with managed embeddings, filtered and hybrid search, sync via Kafka."""
