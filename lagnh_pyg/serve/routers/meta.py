"""``GET /api/health`` and ``GET /api/info``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..models import ErrorResponse, HealthResponse, InfoResponse

router = APIRouter(prefix="/api", tags=["meta"], responses={400: {"model": ErrorResponse}})


@router.get("/health", response_model=HealthResponse)
def health(request: Request) -> HealthResponse:
    return HealthResponse(items=len(request.app.state.collection))


@router.get("/info", response_model=InfoResponse)
def info(request: Request) -> InfoResponse:
    s = request.app.state.settings
    return InfoResponse(**request.app.state.collection.info(), max_upload_bytes=s.max_upload_bytes,
                        rerank=s.rerank, rerank_score=str(s.rerank_score),
                        writes_need_token=bool(s.token))
