"""Validate records against the OCSF 1.x schema, offline: ``validate_ocsf(record) -> [str]``.

    problems = validate_ocsf(record)     # [] when the record is valid
    assert not problems, "\\n".join(problems)

What it uses. The OCSF schema itself, as schema.ocsf.io exports it (``/export/schema``),
for OCSF 1.0.0 to 1.8.0, shipped inside the PyPI package ``ocsf-json-schema`` (MIT; the
schema files are OCSF's, Apache-2.0). That package turns a class of a given version and set
of profiles into a JSON Schema (draft 2020-12, referenced objects embedded): required
attributes, attribute types and OCSF's type constraints (regex, ranges, lengths), enums of
``*_id`` attributes, ``additionalProperties: false`` (an attribute the class does not have
is an error) and the ``at_least_one`` / ``just_one`` constraints. ``jsonschema`` validates
the record against it.

Which schema. The record says it: ``metadata.version`` picks the OCSF version,
``class_uid`` the class (4002 HTTP Activity, 4001 Network Activity, ...) and
``metadata.profiles`` the profiles whose attributes it may use. Note for egress's mapping:
``actor`` comes with the ``host`` profile and ``disposition_id`` / ``action_id`` with
``security_control``; a record using them must list those profiles.

On top of the JSON Schema, the rules OCSF states in prose that a schema cannot:
``type_uid = class_uid * 100 + activity_id`` and ``category_uid`` is the class's category.

Not checked: that ``*_name`` captions match their ``*_id`` (OCSF leaves them to the
producer), observables' contents, deprecation warnings (deprecated attributes still
validate), extensions.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["OCSF_VERSIONS", "validate_ocsf"]


@functools.cache
def _packaged_versions() -> frozenset[str]:
    from ocsf_json_schema import get_packaged_versions

    return frozenset(get_packaged_versions())


OCSF_VERSIONS = sorted(v for v in _packaged_versions() if "rc" not in v)


@functools.cache
def _export(version: str) -> dict[str, Any]:
    """The schema.ocsf.io export of one version, as the package ships it."""
    from ocsf_json_schema import get_ocsf_schema

    export: dict[str, Any] = get_ocsf_schema(version=version)
    return export


@functools.cache
def _schema(version: str) -> Any:
    from ocsf_json_schema import OcsfJsonSchemaEmbedded

    return OcsfJsonSchemaEmbedded(_export(version))


@functools.cache
def _validator(version: str, class_name: str, profiles: tuple[str, ...]) -> Any:
    from jsonschema import Draft202012Validator

    schema = _schema(version).get_class_schema(class_name, list(profiles))
    return Draft202012Validator(schema)


def _where(path: Any) -> str:
    return "/".join(str(p) for p in path) or "(record)"


def validate_ocsf(record: Any) -> list[str]:
    """Every way ``record`` breaks the OCSF schema it claims (``metadata.version``,
    ``class_uid``, ``metadata.profiles``), one message per problem; [] when valid."""
    if not isinstance(record, dict):
        return ["(record): an OCSF event is a JSON object"]
    metadata = record.get("metadata")
    version = metadata.get("version") if isinstance(metadata, dict) else None
    if not isinstance(version, str):
        return ["metadata/version: required (the OCSF version this record follows)"]
    if version not in _packaged_versions():
        return [f"metadata/version: OCSF {version!r} is not packaged; known: "
                + ", ".join(OCSF_VERSIONS)]
    class_uid = record.get("class_uid")
    if not isinstance(class_uid, int) or isinstance(class_uid, bool):
        return ["class_uid: required integer (e.g. 4002 HTTP Activity)"]
    schema = _schema(version)
    try:
        class_name = schema.lookup_class_name_from_uid(class_uid)
    except ValueError:
        return [f"class_uid: {class_uid} is not a class of OCSF {version}"]
    profiles = metadata.get("profiles", []) if isinstance(metadata, dict) else []
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        return ["metadata/profiles: a list of profile names"]
    declared = _export(version)["classes"][class_name]
    known = set(declared.get("profiles") or [])
    problems = [f"metadata/profiles: {p!r} is not a profile of {class_name} in OCSF {version}"
                for p in profiles if p not in known]
    validator = _validator(version, class_name, tuple(sorted(set(profiles) & known)))
    problems += sorted(f"{_where(e.absolute_path)}: {e.message}"
                       for e in validator.iter_errors(record))
    activity_id, type_uid = record.get("activity_id"), record.get("type_uid")
    if isinstance(activity_id, int) and isinstance(type_uid, int) \
            and type_uid != class_uid * 100 + activity_id:
        problems.append(f"type_uid: {type_uid} is not class_uid * 100 + activity_id "
                        f"({class_uid * 100 + activity_id})")
    category = declared.get("category_uid")
    if category is not None and record.get("category_uid") not in (None, category):
        problems.append(f"category_uid: {class_name} is in category {category}")
    return problems
