"""Validation of every string that may reach a PBX. Nothing is sent to a gateway that has not passed
through one of these functions: a CR or LF would end an AMI or ESL command and start another one."""

from __future__ import annotations

import re

from callcenter.errors import Invalid

_SOUND = re.compile(r"[A-Za-z0-9_/-]{1,128}")
_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NUMBER = re.compile(r"\+?[0-9]{2,20}")
_EXTENSION = re.compile(r"[0-9A-Za-z_]{1,32}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# Characters that change the meaning of an ESL originate ({var=val,var=val}dialstring app args) or of
# an AMI Variable/Channel header; refused in anything placed inside them.
_ESL_META = re.compile(r"[{}\[\],'\"^|;=\s]")


def validate_number(value: str, *, field: str = "number") -> str:
    """A dialable number: optional '+', then 2-20 digits. Raises `Invalid` otherwise."""
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise Invalid(f"{field} must be digits with an optional leading +, got {value!r}", field=field)
    return value


def validate_extension(value: str, *, field: str = "extension") -> str:
    if not isinstance(value, str) or not _EXTENSION.fullmatch(value):
        raise Invalid(f"{field} must be 1-32 letters, digits or _, got {value!r}", field=field)
    return value


def validate_text(value: str, *, field: str, max_len: int = 128) -> str:
    """Free text (a caller ID name) with no control characters."""
    if not isinstance(value, str) or _UNSAFE.search(value) or len(value) > max_len:
        raise Invalid(f"{field} must be at most {max_len} characters without control characters", field=field)
    return value


def validate_variables(variables: dict[str, str], *, field: str = "variables") -> dict[str, str]:
    """Channel variables: identifier names, values free of control and separator characters."""
    for name, value in variables.items():
        if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
            raise Invalid(f"{field}: bad variable name {name!r}", field=field)
        if not isinstance(value, str) or _UNSAFE.search(value) or _ESL_META.search(value) or len(value) > 256:
            raise Invalid(
                f"{field}: value of {name} must not contain control characters, spaces or any of "
                "{ } [ ] , ' \" ^ | ; =",
                field=field,
            )
    return variables


def validate_call_id(value: str) -> str:
    if not isinstance(value, str) or not _CALL_ID.fullmatch(value):
        raise Invalid(
            f"call id must be 1-64 letters, digits, '.', '_' or '-', got {value!r}", field="call_id"
        )
    return value


def validate_sound(value: str) -> str:
    if not isinstance(value, str) or not _SOUND.fullmatch(value) or ".." in value:
        raise Invalid(f"sound must be a file name without extension, got {value!r}", field="sound")
    return value
