"""The two message schemas, and decoding them from a Pub/Sub push CloudEvent.

Messages carry ids only; state lives in Firestore and Cloud Storage. A message that
cannot be used raises :class:`BadMessageError` with a reason meant for a log line: the
function acks it (retrying cannot fix it) instead of letting Pub/Sub redeliver forever.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, NamedTuple

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import validate_id
from resumable.errors import BadMessageError, InvalidIdError

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def _safe_id(what: str) -> AfterValidator:
    def check(value: str) -> str:
        try:
            return validate_id(value, what)
        except InvalidIdError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(check)


PipelineName = Annotated[str, _safe_id("pipeline")]
RunId = Annotated[str, _safe_id("run id")]
StepName = Annotated[str, _safe_id("step")]
TenantId = Annotated[str, _safe_id("tenant id")]
MapId = Annotated[str, _safe_id("map id")]


class StartMessage(BaseModel):
    """Start a run: ``{"pipeline": str, "params": {...}, "run_id"?: str, "tenant_id"?: str}``."""

    model_config = ConfigDict(extra="allow")

    pipeline: PipelineName
    params: dict[str, Any]
    run_id: RunId | None = None
    tenant_id: TenantId | None = None


class StepMessage(BaseModel):
    """Run one step of a run: ``{"pipeline", "run_id", "step"}`` plus optional hints."""

    model_config = ConfigDict(extra="allow")

    pipeline: PipelineName
    run_id: RunId
    step: StepName
    tenant_id: TenantId = DEFAULT_TENANT
    attempt: int | None = Field(default=None, description="hint only; the run document decides")
    # The run's generation when the message was sent (+1 at every resume): a message from
    # before a resume is stale. Messages of release 0.1.0 have none; they are still served.
    generation: int | None = Field(default=None, ge=0)
    # Map steps: the item this message runs (``None``: the step itself, which dispatches
    # the items and joins them) and the map it belongs to.
    item: int | None = Field(default=None, ge=0)
    map_id: MapId | None = None


class PubSubPayload(NamedTuple):
    """What a push delivery carries besides the message's own JSON."""

    data: bytes
    attributes: dict[str, str]
    delivery_attempt: int | None
    message_id: str | None


def pubsub_payload(event_data: Any) -> PubSubPayload:
    """The message bytes, attributes, delivery attempt and message id of a Pub/Sub
    CloudEvent's data.

    Accepts the CloudEvent data (``{"message": {...}}``) and the raw push envelope (which
    also has ``subscription`` and, with dead-lettering, ``deliveryAttempt``). A field of
    the wrong type is a :class:`BadMessageError`, like any other unusable message.
    """
    if isinstance(event_data, bytes | str):
        try:
            event_data = orjson.loads(event_data)
        except orjson.JSONDecodeError:
            raise BadMessageError("the event body is not JSON") from None
    if not isinstance(event_data, dict) or not isinstance(event_data.get("message"), dict):
        raise BadMessageError("the event has no Pub/Sub 'message' object")
    message = event_data["message"]
    encoded = message.get("data")
    if encoded is not None and not isinstance(encoded, str):
        raise BadMessageError(f"the message data is a {type(encoded).__name__}, not base64 text")
    try:
        data = base64.b64decode(encoded or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadMessageError("the message data is not valid base64") from None
    attributes = message.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise BadMessageError("the message attributes are not a map of strings")
    attempt = event_data.get("deliveryAttempt", message.get("deliveryAttempt"))
    return PubSubPayload(data, attributes, _delivery_attempt(attempt), _message_id(message))


def _delivery_attempt(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise BadMessageError(f"the delivery attempt {value!r} is not a count")


def _message_id(message: dict[str, Any]) -> str | None:
    value = message.get("messageId", message.get("message_id"))
    if value is None:
        return None
    # A start message without a run id is named after it: it must be usable in an id.
    if not isinstance(value, str) or len(value) > 64:
        raise BadMessageError(f"the message id {str(value)[:80]!r} is not a Pub/Sub message id")
    try:
        return validate_id(value, "message id")
    except InvalidIdError as exc:
        raise BadMessageError(str(exc)) from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessageError(f"the {what} message is larger than 10 MB")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        preview = data[:80].decode("utf-8", "replace")
        raise BadMessageError(f"the {what} message is not JSON: {preview!r}") from None
    if not isinstance(body, dict):
        raise BadMessageError(
            f"the {what} message must be a JSON object, got {type(body).__name__}"
        )
    return body


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_start(data: bytes) -> StartMessage:
    body = _json_object(data, "start")
    try:
        return StartMessage.model_validate(body)
    except ValidationError as exc:
        known = {k: body.get(k) for k in ("run_id", "pipeline", "tenant_id")}
        raise BadMessageError(
            f"invalid start message: {_explain(exc)}",
            **{k: v for k, v in known.items() if isinstance(v, str)},
        ) from None


def parse_step(data: bytes) -> StepMessage:
    body = _json_object(data, "step")
    try:
        return StepMessage.model_validate(body)
    except ValidationError as exc:
        raise BadMessageError(f"invalid step message: {_explain(exc)}") from None


def encode(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(exclude_none=True))
