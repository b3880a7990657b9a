"""What the engine asks a PBX to do: the value of one call to place (`OriginateRequest`, validated
when built) and the commands the core returns to its runner, which sends them through a gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from callcenter.errors import Invalid
from callcenter.validation import validate_call_id, validate_number, validate_text, validate_variables


@dataclass(frozen=True)
class OriginateRequest:
    """One call to place. Construction validates every field, so a request that exists is safe."""

    call_id: str
    number: str
    caller_id: str = ""
    caller_name: str = ""
    ring_timeout_s: float = 30.0
    amd: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_call_id(self.call_id)
        validate_number(self.number)
        if self.caller_id:
            validate_number(self.caller_id, field="caller_id")
        validate_text(self.caller_name, field="caller_name", max_len=64)
        validate_variables(dict(self.variables))
        if not 1 <= self.ring_timeout_s <= 300:
            raise Invalid("ring timeout must be 1-300 seconds", field="ring_timeout_s")

    @property
    def digits(self) -> str:
        """The number without its leading '+', as dial-string templates take it."""
        return self.number.lstrip("+")


@dataclass(frozen=True, slots=True)
class Originate:
    gateway: str
    request: OriginateRequest


@dataclass(frozen=True, slots=True)
class ConnectAgent:
    gateway: str
    call_id: str
    extension: str


@dataclass(frozen=True, slots=True)
class PlayAndHangup:
    gateway: str
    call_id: str
    sound: str


@dataclass(frozen=True, slots=True)
class Hangup:
    gateway: str
    call_id: str


Command = Originate | ConnectAgent | PlayAndHangup | Hangup
