"""Property-based fuzzing of the OpenAPI schema with schemathesis: no request may cause a 5xx.

Runs against the real app (tiny random model, real SentencePiece and beam search) with
small limits so each generated request is cheap. Both schema-valid (positive) and
schema-violating (negative) requests are generated for every operation; example counts
are bounded and derandomised, so the test is fast (< 30 s) and reproducible.

Each operation that takes input must get more than one distinct generated case (per media
type: ``POST /translate`` takes JSON and form bodies), so a body schema the fuzzer cannot
satisfy (it once generated a single empty case for ``/translate``, whose schema referenced
an undefined component) fails the test instead of passing silently.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from mt.modelio import load_model
from serve.app import create_app
from serve.settings import ServerSettings
from _serve_support import make_random_model_dir

LIMITS = ServerSettings(max_texts=4, max_chars=200, max_tokens_per_text=64, max_beam=4, decode={"beam": 2},
                        max_output_length=16, max_body_bytes=16 * 1024, request_timeout_s=20)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    tiny = load_model(make_random_model_dir(tmp_path_factory.mktemp("fuzz") / "model", preset="tiny"))
    app = create_app({"de-en": tiny}, LIMITS)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode, examples", [(GenerationMode.POSITIVE, 150), (GenerationMode.NEGATIVE, 150)])
def test_no_request_causes_a_server_error(api_schema, mode, examples):
    operations = [op.ok() for op in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/translate", "POST /translate"}
    seen: set[str] = set()
    cases: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (method, path, media type) -> cases

    @given(case=st.one_of([op.as_strategy(generation_mode=mode) for op in operations]))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call()
        cases[(case.method, case.path, case.media_type or "")].add(repr((case.body, case.query, case.headers)))
        seen.add(f"{case.method} {case.path} {response.status_code}")
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if response.status_code >= 400:  # every error is our JSON shape
            body = response.json()
            assert isinstance(body["error"], str) and body["code"], body

    check()
    # the fuzzer really reached the translation endpoints (not only /health)
    assert any(s.startswith("POST /v1/translate") for s in seen), seen
    counts = {key: len(found) for key, found in cases.items()}
    bodies = [("POST", "/v1/translate", "application/json"), ("POST", "/translate", "application/json"),
              ("POST", "/translate", "application/x-www-form-urlencoded")]
    for key in bodies:
        assert counts.get(key, 0) > 1, (key, counts)
    if mode == GenerationMode.POSITIVE:  # operations without input have one valid case each
        reached = {(method, path) for method, path, _ in cases}
        assert reached == {(op.method.upper(), op.path) for op in operations}, counts
