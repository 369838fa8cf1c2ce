"""Request and response models of the HTTP API (what scripts rely on; extend, don't rename)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MAX_K = 1000
MAX_RERANK = 10_000


class ErrorResponse(BaseModel):
    error: str


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    items: int


class InfoResponse(BaseModel):
    run: str
    method: str
    bits: int
    model_fingerprint: str
    items: int = Field(description="live items: database + added - deleted")
    database_items: int
    added_items: int = Field(description="items users added (pictures, codes)")
    deleted_items: int
    dataset: str
    has_labels: bool
    index_kind: str
    index_saved: bool
    upload_search: bool = Field(description="whether a new picture can be featurized (the dataset records its recipe)")
    max_upload_bytes: int
    max_k: int = MAX_K
    writes_need_token: bool
    rerank: int = Field(0, description="the server's default R of two-stage ranking (0 = Hamming order)")
    rerank_score: str = Field(description="the server's default re-rank score")
    max_rerank: int = MAX_RERANK
    held_out_items: int = Field(0, description="the dataset's held-out query items `lagnh index-folder` put in the "
                                               "collection (not counted in added_items)")


class Result(BaseModel):
    rank: int
    id: str
    distance: int = Field(description="Hamming distance to the query")
    score: float | None = Field(None, description="the re-rank score (higher first), when re-ranked")
    labels: list[str] | None = None
    tags: list[str] | None = None
    thumbnail: str | None = Field(None, description="URL of the item's thumbnail (JPEG), when it has a picture")


class Query(BaseModel):
    kind: Literal["id", "image", "code"]
    id: str | None = None
    code: str = Field(description="the query's packed code, hex")
    labels: list[str] | None = None
    tags: list[str] | None = None
    thumbnail: str | None = None


class Rerank(BaseModel):
    depth: int = Field(description="R: the Hamming candidates re-ranked (0: Hamming order, ties by database order)")
    score: str | None = None


class SearchResponse(BaseModel):
    query: Query
    k: int
    results: list[Result]
    items: int
    rerank: Rerank
    notes: list[str] = Field(description="what the query's featurizing warned about (no tags; unknown tags) and "
                                         "why it was not re-ranked")
    timing_ms: dict[str, float]


class CodeSearchRequest(BaseModel):
    """``POST /api/search`` with a JSON body: search by a packed code (hex of np.packbits bytes)."""

    code: str
    k: int = Field(10, ge=1, le=MAX_K)
    rerank: int | None = Field(None, ge=0, le=MAX_RERANK)
    score: str | None = Field(None, max_length=200)


class CodeItem(BaseModel):
    id: str = Field(min_length=1, max_length=512)
    code: str
    tags: list[str] = []


class AddCodesRequest(BaseModel):
    """``POST /api/items`` with a JSON body: add precomputed packed codes (no picture)."""

    items: list[CodeItem] = Field(min_length=1)


class Added(BaseModel):
    id: str
    code: str
    thumbnail: str | None = None


class AddResponse(BaseModel):
    added: list[Added]
    items: int
    notes: list[str] = []


class DeleteResponse(BaseModel):
    deleted: str
    items: int


class PageItem(BaseModel):
    id: str
    labels: list[str] | None = None
    tags: list[str] | None = None
    thumbnail: str | None = None


class PageResponse(BaseModel):
    """``GET /api/items?offset=&limit=``: a page of the live collection, in index order."""

    items: list[PageItem]
    offset: int
    total: int = Field(description="live items in the collection")


class ItemResponse(BaseModel):
    id: str
    code: str
    source: Literal["database", "added", "dataset"]
    labels: list[str] | None = None
    tags: list[str] | None = None
    thumbnail: str | None = None
