"""Act four and five: a retrieval index with managed embeddings, and the model version's lineage."""

from __future__ import annotations

import grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb

from services.demo.clients import Clients
from services.demo.console import progress, say

DOCUMENTS = {
    "runbook-kafka": "If consumer lag grows, check the DLQ topic and the reason in its headers.",
    "runbook-drift": "A drift alarm on the scorer means its input features moved away from the training data.",
    "runbook-alias": "Roll back a model by moving the champion alias to the previous version.",
    "faq-grants": "Querying an index needs USE_SCHEMA on its schema; writing needs MODIFY.",
    "faq-tokens": "Error TSR-403 means the caller's token lacks EXECUTE on the model.",
    "faq-llm": "The LLM endpoint streams tokens over GenerateStream as the engine produces them.",
}
QUERY = "what to do when the model's inputs drift"


async def retrieval_act(clients: Clients, schema: str) -> None:
    index = f"{schema}.runbooks"
    try:
        described = await clients.retrieval.DescribeIndex(qpb.DescribeIndexRequest(name=index), metadata=clients.md)
        say("retrieval", f"index {index} exists from an earlier run ({described.row_count} rows); upserting again")
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        created = await clients.retrieval.CreateIndex(
            qpb.CreateIndexRequest(
                name=index,
                metadata_schema=[qpb.MetadataField(name="body", type=qpb.STRING)],
                embedding=qpb.EmbeddingSource(model="all-MiniLM-L6-v2", text_columns=["body"]),
            ),
            metadata=clients.md,
        )
        say("retrieval", f"created index {index}: {created.dimension}-d vectors embedded by {created.embedding.model}")
    docs = []
    for doc_id, body in DOCUMENTS.items():
        doc = qpb.Document(id=doc_id, version=1)
        doc.metadata["body"] = body
        docs.append(doc)
    async with progress("retrieval", "embedding and upserting the documents"):
        written = await clients.retrieval.UpsertDocuments(
            qpb.UpsertDocumentsRequest(index=index, documents=docs), metadata=clients.md, timeout=120
        )
    say(
        "retrieval",
        f"upserted {len(docs)} documents: {written.applied} applied, {written.skipped} unchanged (same version)",
    )
    for text, mode in ((QUERY, qpb.HYBRID), ("TSR-403", qpb.HYBRID)):
        reply = await clients.retrieval.Query(
            qpb.QueryRequest(index=index, text=text, k=3, mode=mode, columns=["body"]), metadata=clients.md
        )
        say("retrieval", f"hybrid query {text!r}:")
        for rank, hit in enumerate(reply.hits, 1):
            say("retrieval", f"  {rank}. {hit.id:<14} score {hit.score:.4f}  {hit.metadata['body'][:70]}")


async def lineage_act(clients: Clients, model_name: str, version: int) -> None:
    node = rpb.LineageNode(type="MODEL_VERSION", name=f"{model_name}/{version}")
    for direction, label in (
        (rpb.LINEAGE_DIRECTION_UPSTREAM, "upstream"),
        (rpb.LINEAGE_DIRECTION_DOWNSTREAM, "downstream"),
    ):
        graph = await clients.registry.GetLineage(
            rpb.GetLineageRequest(node=node, direction=direction), metadata=clients.md
        )
        say("lineage", f"{label} of {node.name}: {len(graph.nodes)} nodes")
        for edge in graph.edges:
            say("lineage", f"  {edge.source.type} {edge.source.name}  ->  {edge.target.type} {edge.target.name}")
