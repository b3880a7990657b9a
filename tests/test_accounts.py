"""Accounts on both databases: users, roles, permissions, agents."""

import pytest
from sqlalchemy.engine import Engine

from callcenter import accounts
from callcenter.db import session_scope
from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.models import Permission


def test_user_with_role_gets_role_permissions(engine: Engine) -> None:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username="ann", password="password-1", roles=["agent"])
        principal = accounts.load_principal(s, accounts.row_id(user))
    assert principal is not None
    assert principal.roles == {"agent"}
    assert Permission.WORKSTATION in principal.permissions
    assert Permission.ADMIN not in principal.permissions


def test_password_is_hashed_with_argon2_and_verifies(engine: Engine) -> None:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username="bob", password="password-2", roles=[])
        assert user.password_hash.startswith("$argon2")
        assert "password-2" not in user.password_hash
        assert accounts.authenticate(s, username="bob", password="password-2") is not None
        assert accounts.authenticate(s, username="bob", password="wrong-pass") is None
        assert accounts.authenticate(s, username="nobody", password="password-2") is None


def test_duplicate_username_is_a_conflict(engine: Engine) -> None:
    with session_scope(engine) as s:
        accounts.create_user(s, username="cat", password="password-3")
    with pytest.raises(Conflict) as info, session_scope(engine) as s:
        accounts.create_user(s, username="cat", password="password-3")
    assert info.value.field == "username"


def test_unknown_role_is_refused(engine: Engine) -> None:
    with pytest.raises(NotFound), session_scope(engine) as s:
        accounts.create_user(s, username="dan", password="password-4", roles=["wizard"])


def test_password_change_revokes_tokens(engine: Engine) -> None:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username="eve", password="password-5")
        before = user.token_version
        accounts.set_password(s, user_id=accounts.row_id(user), password="password-6")
        principal = accounts.load_principal(s, accounts.row_id(user))
    assert principal is not None and principal.token_version == before + 1


def test_agent_extension_is_unique_and_validated(engine: Engine) -> None:
    with session_scope(engine) as s:
        group = accounts.create_skill_group(s, name="Sales")
        u1 = accounts.create_user(s, username="a1", password="password-7")
        u2 = accounts.create_user(s, username="a2", password="password-7")
        agent = accounts.create_agent(
            s, user_id=accounts.row_id(u1), extension="1001", skill_group_ids=[accounts.row_id(group)]
        )
        assert agent.state == "offline"
        with pytest.raises(Conflict):
            accounts.create_agent(s, user_id=accounts.row_id(u2), extension="1001")
        with pytest.raises(Invalid):
            accounts.create_agent(s, user_id=accounts.row_id(u2), extension="10\r\n02")
        principal = accounts.load_principal(s, accounts.row_id(u1))
    assert principal is not None and principal.extension == "1001"
