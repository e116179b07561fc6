"""The endpoints. Each is a thin shell over the app's :class:`~.pipeline.Pipeline`
(``request.app.state.pipeline``), which does the work."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from .errors import ApiError
from .pipeline import Pipeline
from .responses import AsciiJSONResponse
from .schemas import (
    BODY_DOC,
    ERROR_RESPONSES,
    EXPLAIN_RESPONSES,
    ExplainResponse,
    Options,
    PredictResponse,
)

router = APIRouter(default_response_class=AsciiJSONResponse)
ModelName = Annotated[str, PathParam(max_length=200)]


def pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


@router.get("/healthz", tags=["service"], summary="liveness")
async def healthz(request: Request):
    return {"status": "ok", "models": len(pipeline(request).served),
            "auth_required": request.app.state.auth_required}


@router.get("/v1/models", tags=["models"], summary="the served models", responses=ERROR_RESPONSES)
async def list_models(request: Request):
    return {"models": [m.info() for m in pipeline(request).served.values()]}


@router.get("/v1/models/{name}", tags=["models"], summary="one model", responses=ERROR_RESPONSES)
async def get_model(name: ModelName, request: Request):
    return pipeline(request).model(name).info()


@router.post("/v1/models/{name}/predict", tags=["models"], summary="predict (no relevance pass)",
             response_model=PredictResponse, responses=ERROR_RESPONSES, openapi_extra=BODY_DOC)
async def predict(name: ModelName, request: Request, options: Annotated[Options, Query()]):
    return await pipeline(request).predict(name, request, options)


@router.post("/v1/models/{name}/explain", tags=["models"], summary="predict and explain with LRP",
             response_model=ExplainResponse, responses=EXPLAIN_RESPONSES, openapi_extra=BODY_DOC)
async def explain(name: ModelName, request: Request, options: Annotated[Options, Query()]):
    return await pipeline(request).explain(name, request, options)


@router.get("/v1/examples", tags=["examples"], summary="example recordings for the viewer")
async def list_examples(request: Request):
    examples = pipeline(request).examples
    return {"examples": [{"name": n, "url": f"/v1/examples/{n}"} for n in sorted(examples)]}


@router.get("/v1/examples/{name}", tags=["examples"], summary="one example recording",
            response_class=FileResponse, responses=ERROR_RESPONSES)
async def get_example(name: str, request: Request):
    examples = pipeline(request).examples
    if name not in examples:
        raise ApiError(404, f"no example named '{name[:80]}'")
    return FileResponse(examples[name], media_type="audio/wav")


@router.get("/v1/stats", tags=["service"], summary="queue, batching and memory statistics")
async def stats(request: Request):
    return pipeline(request).stats()
