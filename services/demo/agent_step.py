"""Act (i): a RAG agent over the runbooks the retrieval act indexed, answering with citations."""

from __future__ import annotations

from services.demo.clients import Clients
from services.demo.console import progress, say
from services.demo.retrieval_lineage import DOCUMENTS
from services.fixtures.agents import build_agent
from services.fixtures.registry_client import RegistryClient

AGENT_ENDPOINT = "runbook-agent"
QUESTION = "How do I roll back a model to the previous version?"


async def agent_act(clients: Clients, models_schema: str, docs_schema: str, llm_endpoint: str = "demo-llm") -> None:
    """Register an agent version (index, LLM endpoint, prompt) and ask it through the stock openai SDK."""
    from openai import AsyncOpenAI

    registry = RegistryClient(clients.settings.registry_address, clients.settings.token)
    try:
        async with progress("agent", "indexing the runbooks, registering the agent, serving it"):
            agent = await build_agent(
                registry,
                clients.retrieval,
                clients.serving,
                token=clients.settings.token,
                index=f"{docs_schema}.runbooks",
                model_name=f"{models_schema}.runbook_agent",
                endpoint=AGENT_ENDPOINT,
                llm_endpoint=llm_endpoint,
                documents=DOCUMENTS,
            )
    finally:
        await registry.channel.close()
    say(
        "agent",
        f"{agent.model_name} v{agent.version} on endpoint {agent.endpoint}: "
        f"retrieves k={agent.spec['k']} from {agent.index}, generates on {agent.llm_endpoint}",
    )
    sdk = AsyncOpenAI(base_url=clients.settings.serving_openai_url, api_key=clients.settings.token, max_retries=0)
    try:
        reply = await sdk.chat.completions.create(
            model=AGENT_ENDPOINT,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=24,
            temperature=0.0,
        )
    finally:
        await sdk.close()
    extra = reply.model_extra.get("tessera") or {}
    say("agent", f"asked {QUESTION!r} through the openai SDK (request {reply.id})")
    say("agent", f"  answer (the tiny Llama's words): {reply.choices[0].message.content!r}")
    for passage in extra.get("retrieved_context", []):
        say(
            "agent",
            f"  retrieved [{passage.get('id')}] score {float(passage.get('score', 0)):.3f}: {passage.get('text')!r}",
        )
    cited = list(extra.get("citations", []))
    if "runbook-alias" not in cited:
        raise RuntimeError(f"the rollback runbook was not among the citations {cited}")
    say("agent", f"cited {cited}: the rollback runbook among them; the payload log keeps the retrieved context")
