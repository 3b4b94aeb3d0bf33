"""gRPC front end: proto -> core -> proto. Errors are the core's exceptions, mapped by the shared server."""

from __future__ import annotations

from tessera.common.v1 import common_pb2
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.retrieval import converters
from services.retrieval.core import RetrievalCore
from services.retrieval.entities import DocumentRef, WriteResult

SERVICE_NAME = "tessera.retrieval.v1.RetrievalService"
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, core: RetrievalCore) -> None:
        self.core = core

    async def CreateIndex(self, request, context):
        info = await self.core.create_index(current_principal(), converters.spec_from_proto(request))
        return converters.index_to_proto(info)

    async def DescribeIndex(self, request, context):
        return converters.index_to_proto(await self.core.describe_index(current_principal(), request.name))

    async def ListIndexes(self, request, context):
        size = request.page.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE}", field="page.page_size")
        page = await self.core.list_indexes(current_principal(), size, request.page.page_token)
        return pb.ListIndexesResponse(
            indexes=[converters.index_to_proto(i) for i in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_token),
        )

    async def DeleteIndex(self, request, context):
        await self.core.delete_index(current_principal(), request.name)
        return pb.DeleteIndexResponse()

    async def BuildIndex(self, request, context):
        return converters.index_to_proto(await self.core.build_index(current_principal(), request.name))

    async def UpsertDocuments(self, request, context):
        docs = [converters.document_from_proto(d, i) for i, d in enumerate(request.documents)]
        result = await self.core.upsert(current_principal(), request.index, docs)
        return pb.WriteResponse(applied=result.applied, skipped=result.skipped)

    async def StreamWriteDocuments(self, request_iterator, context):
        total = WriteResult()
        async for request in request_iterator:
            kind = request.WhichOneof("op")
            if kind == "upsert":
                docs = [converters.document_from_proto(d, i) for i, d in enumerate(request.upsert.documents)]
                result = await self.core.upsert(current_principal(), request.upsert.index, docs)
            elif kind == "delete":
                refs = [DocumentRef(d.id, d.version) for d in request.delete.documents]
                result = await self.core.delete_documents(current_principal(), request.delete.index, refs)
            else:
                raise InvalidArgument("each stream message needs an upsert or a delete", field="op")
            total = total + result
        return pb.WriteResponse(applied=total.applied, skipped=total.skipped)

    async def DeleteDocuments(self, request, context):
        refs = [DocumentRef(d.id, d.version) for d in request.documents]
        result = await self.core.delete_documents(current_principal(), request.index, refs)
        return pb.WriteResponse(applied=result.applied, skipped=result.skipped)

    async def Query(self, request, context):
        hits = await self.core.query(current_principal(), converters.query_from_proto(request))
        return converters.hits_to_proto(hits)

    async def QueryBatch(self, request, context):
        queries = [converters.query_from_proto(q) for q in request.queries]
        results = await self.core.query_batch(current_principal(), queries)
        return pb.QueryBatchResponse(results=[converters.hits_to_proto(hits) for hits in results])

    async def MeasureRecall(self, request, context):
        report = await self.core.measure_recall(
            current_principal(), request.index, request.k or 10, request.sample_size or 100, request.ef_search
        )
        return pb.MeasureRecallResponse(
            recall=report.recall, k=report.k, queries=report.queries, ef_search=report.ef_search
        )
