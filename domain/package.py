"""The Package aggregate: a named price list with immutable, numbered versions.

A published version never changes; a new price is a new version. Assigning a package to an
account copies the version's terms into the assignment event, so every usage record can be
re-priced from the account's own history alone.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInputError
from domain.ids import package_id_for
from domain.money import check_currency
from domain.pricing import PriceTerms

PACKAGE_NAME_LENGTH_MAX = 200


class Package(Aggregate):
    @staticmethod
    def create_id(package_key: str) -> UUID:
        return package_id_for(package_key)

    @event("Created")
    def __init__(self, package_key: str, name: str, currency: str, terms: dict[str, Any],
                 actor: str) -> None:
        self.package_key = package_key
        self.name = name
        self.currency = currency
        self.versions: list[dict[str, Any]] = [terms]

    @classmethod
    def create(cls, *, package_key: str, name: str, currency: str, terms: PriceTerms,
               actor: str) -> Package:
        for field, value in (("package_key", package_key), ("name", name)):
            if not value.strip() or len(value) > PACKAGE_NAME_LENGTH_MAX:
                raise InvalidInputError(
                    f"{field} must be 1 to {PACKAGE_NAME_LENGTH_MAX} characters"
                )
        check_currency(currency)
        return cls(package_key=package_key, name=name, currency=currency,
                   terms=terms.as_dict(), actor=actor)

    @property
    def latest_version(self) -> int:
        return len(self.versions)

    def terms(self, version: int | None = None) -> PriceTerms:
        number = self.latest_version if version is None else version
        if not 1 <= number <= self.latest_version:
            raise InvalidInputError(
                f"package {self.name!r} has versions 1 to {self.latest_version}, not {number}"
            )
        return PriceTerms.from_dict(self.versions[number - 1])

    def publish_version(self, terms: PriceTerms, actor: str) -> int:
        self._version_published(price_version=self.latest_version + 1,
                                terms=terms.as_dict(), actor=actor)
        return self.latest_version

    @event("VersionPublished")
    def _version_published(self, price_version: int, terms: dict[str, Any], actor: str) -> None:
        self.versions.append(terms)
