"""Packages: operators publish price lists and new versions; a team reads the packages its
accounts use. Prices are integer nanos per request and per token, as decimal strings."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, PrincipalDep, aggregates, require_operator, team_access
from adapters.http.commands import run_idempotent
from adapters.http.problems import PROBLEM_RESPONSES, not_found
from adapters.http.read_queries import held_accounts
from adapters.http.schemas import IDEMPOTENCY_KEY_DESCRIPTION, NanosString, Text
from adapters.http.schemas import Request as Body
from adapters.http.views import views
from domain.errors import PackageNotFoundError
from domain.package import Package
from domain.pricing import PriceTerms
from services.ledger import Ledger

router = APIRouter(tags=["packages"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]


class Terms(Body):
    request_nanos: NanosString = Field(description="Price of one request, in nanos")
    input_token_nanos: NanosString
    cached_input_token_nanos: NanosString
    output_token_nanos: NanosString
    bill_failed_requests: bool = False

    def to_terms(self) -> PriceTerms:
        return PriceTerms(request_nanos=int(self.request_nanos),
                          input_token_nanos=int(self.input_token_nanos),
                          cached_input_token_nanos=int(self.cached_input_token_nanos),
                          output_token_nanos=int(self.output_token_nanos),
                          bill_failed_requests=self.bill_failed_requests)


class CreatePackage(Body):
    package_key: Text
    name: Text
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    terms: Terms


class PublishVersion(Body):
    terms: Terms


class TermsOut(BaseModel):
    version: int
    request_nanos: str
    input_token_nanos: str
    cached_input_token_nanos: str
    output_token_nanos: str
    bill_failed_requests: bool


class PackageInfo(BaseModel):
    package_id: str
    package_key: str
    name: str
    currency: str
    latest_version: int
    versions: list[TermsOut]


class PackageList(BaseModel):
    packages: list[PackageInfo]


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def package_info(package: Package) -> dict[str, Any]:
    versions = []
    for number, terms in enumerate(package.versions, start=1):
        versions.append({"version": number, **{k: (v if isinstance(v, bool) else str(v))
                                                for k, v in terms.items()}})
    return {"package_id": str(package.id), "package_key": package.package_key,
            "name": package.name, "currency": package.currency,
            "latest_version": package.latest_version, "versions": versions}


@router.post("/v1/packages", status_code=201, response_model=PackageInfo)
def create_package(body: CreatePackage, request: Request, idempotency_key: IdempotencyKey = None,
                   principal: Principal = PrincipalDep) -> JSONResponse:
    """Create a package with its first version (operators)."""
    require_operator(principal)
    ledger = _ledger(request)

    def run() -> tuple[int, Any]:
        package_id = ledger.create_package(package_key=body.package_key, name=body.name,
                                           currency=body.currency, terms=body.terms.to_terms(),
                                           actor=principal.actor())
        return 201, package_info(ledger.get_package(package_id))

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


@router.post("/v1/packages/{package_id}/versions", response_model=PackageInfo)
def publish_version(package_id: UUID, body: PublishVersion, request: Request,
                    idempotency_key: IdempotencyKey = None,
                    principal: Principal = PrincipalDep) -> JSONResponse:
    """Publish a new version of a package's prices (operators); earlier versions never change."""
    require_operator(principal)
    ledger = _ledger(request)

    def run() -> tuple[int, Any]:
        ledger.publish_package_version(package_id, body.terms.to_terms(), principal.actor())
        return 200, package_info(ledger.get_package(package_id))

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


@router.get("/v1/packages/{package_id}", response_model=PackageInfo)
def get_package(package_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """A package (operators)."""
    require_operator(principal)
    try:
        return package_info(_ledger(request).get_package(package_id))
    except PackageNotFoundError:
        raise not_found(f"package {package_id}") from None


@router.get("/v1/teams/{team_id}/packages", response_model=PackageList)
def team_packages(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """The packages the team's accounts are assigned (any member of the team)."""
    ledger = _ledger(request)
    access = team_access(aggregates(request), principal, team_id)
    package_ids: dict[UUID, None] = {}
    with views(request) as store:  # holders and assignments: the read models (version 5)
        visible = None if access.sees_all_accounts else held_accounts(
            store.conn, team_id, principal.user_id)
        for assignment in sorted(store.assignments_of(team_id),
                                 key=lambda a: (a.effective_from, a.position)):
            if visible is None or str(assignment.account_id) in visible:
                package_ids[assignment.package_id] = None
    return {"packages": [package_info(ledger.get_package(p)) for p in package_ids]}
