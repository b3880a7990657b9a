"""An external chat bot behind the signed webhook (chat/README.md): it checks the HMAC-SHA256 signature
of every request with its own copy of the secret (401 when wrong) and answers from a script."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from tests.peers.http import Handler, Request

SIGNATURE_HEADER = "x-callcenter-signature"


def bot(secret: str, answer: Callable[[dict[str, Any]], dict[str, Any]], *, delay_s: float = 0.0) -> Handler:
    """A handler for `tests.peers.http.serve`."""

    def handle(req: Request) -> tuple[int, dict[str, str], bytes]:
        expected = "sha256=" + hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, req.headers.get(SIGNATURE_HEADER, "")):
            return 401, {"Content-Type": "application/json"}, b'{"error":"bad signature"}'
        if delay_s:
            time.sleep(delay_s)
        reply = answer(json.loads(req.body))
        return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()

    return handle
