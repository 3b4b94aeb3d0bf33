"""Test models for serving: a TorchScript tabular model (two versions) and registry upload helpers."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc

from services.common.auth import bearer

SIGNATURE = {
    "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "category", "datatype": "INT64", "shape": [-1]},
    ],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
}


def build_tabular_model(out_dir: Path, weight: float) -> Path:
    """score = weight * sum(features) + category: each version answers differently, so tests can tell them apart."""
    import torch

    class Tabular(torch.nn.Module):
        def __init__(self, w: float) -> None:
            super().__init__()
            self.w = w

        def forward(self, features: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
            return (features.sum(dim=1, keepdim=True) * self.w) + category.unsqueeze(1).to(torch.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Tabular(weight)).save(str(out_dir / "model.pt"))
    (out_dir / "signature.json").write_text(json.dumps(SIGNATURE))
    return out_dir


class RegistryClient:
    """Just enough of the registry API to register models the way a user would."""

    def __init__(self, address: str, token: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * 2**20)])
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        self.md = bearer(token)

    async def ensure_schema(self, catalog: str, schema: str) -> None:
        await self.stub.CreateCatalog(rpb.CreateCatalogRequest(name=catalog), metadata=self.md)
        await self.stub.CreateSchema(rpb.CreateSchemaRequest(catalog_name=catalog, name=schema), metadata=self.md)

    async def register(self, model_name: str, folder: Path, *, new_model: bool = True) -> int:
        if new_model:
            await self.stub.CreateRegisteredModel(
                rpb.CreateRegisteredModelRequest(full_name=model_name), metadata=self.md
            )
        version = await self.stub.CreateModelVersion(
            rpb.CreateModelVersionRequest(model_name=model_name), metadata=self.md
        )
        ref = rpb.ModelVersionRef(model_name=model_name, version=version.version)

        async def chunks():
            yield rpb.UploadArtifactsRequest(target=rpb.ArtifactTarget(model_version=ref))
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
                data = path.read_bytes()
                rel = path.relative_to(folder).as_posix()
                step = 1024 * 1024
                for offset in range(0, max(len(data), 1), step):
                    yield rpb.UploadArtifactsRequest(
                        chunk=rpb.ArtifactChunk(
                            path=rel, data=data[offset : offset + step], offset=offset, file_size=len(data)
                        )
                    )

        await self.stub.UploadArtifacts(chunks(), metadata=self.md)
        await self.stub.FinalizeModelVersion(
            rpb.FinalizeModelVersionRequest(model_name=model_name, version=version.version), metadata=self.md
        )
        return version.version

    async def set_alias(self, model_name: str, alias: str, version: int) -> None:
        await self.stub.SetModelAlias(
            rpb.SetModelAliasRequest(model_name=model_name, alias=alias, version=version), metadata=self.md
        )

    async def grant(self, kind: int, name: str, principal: str, privileges: list[int]) -> None:
        await self.stub.Grant(
            rpb.GrantRequest(securable_type=kind, securable_full_name=name, principal=principal, privileges=privileges),
            metadata=self.md,
        )

    async def lineage_of(self, model_name: str, version: int) -> rpb.GetLineageResponse:
        return await self.stub.GetLineage(
            rpb.GetLineageRequest(
                node=rpb.LineageNode(type="MODEL_VERSION", name=f"{model_name}/{version}"),
                direction=rpb.LINEAGE_DIRECTION_DOWNSTREAM,
            ),
            metadata=self.md,
        )
