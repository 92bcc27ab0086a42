"""Secrets are redacted by key and by shape, whatever the key (architecture.md §10)."""

from noetl_common import REDACTED, scrub, scrub_text

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"


def test_sensitive_keys_redact_whole_value() -> None:
    data = {"password": "hunter2", "nested": {"api_key": {"a": 1}, "db_password": "x"}, "user": "bob"}
    assert scrub(data) == {
        "password": REDACTED,
        "nested": {"api_key": REDACTED, "db_password": REDACTED},
        "user": "bob",
    }


def test_secret_looking_values_redacted_under_any_key() -> None:
    data = {
        "note": f"header Bearer abcdefghijklmnop and {JWT}",
        "items": [PEM, "ghp_" + "a" * 36, "AKIAABCDEFGHIJKLMNOP", "plain text"],
        "url": "postgresql://noetl:s3cret@db:5432/noetl",
    }
    out = scrub(data)
    assert "abcdefghijklmnop" not in out["note"] and JWT not in out["note"]
    assert out["items"][:3] == [REDACTED, REDACTED, REDACTED]
    assert out["items"][3] == "plain text"
    assert "s3cret" not in out["url"] and out["url"].startswith("postgresql://")


def test_scrub_does_not_mutate_and_keeps_types() -> None:
    data = {"n": 1, "f": 1.5, "ok": True, "none": None, "token": "", "list": (1, 2)}
    out = scrub(data)
    assert out == {"n": 1, "f": 1.5, "ok": True, "none": None, "token": "", "list": [1, 2]}
    assert data["list"] == (1, 2)
    assert scrub_text("nothing to see") == "nothing to see"


def test_words_that_merely_start_with_pass_are_not_sensitive() -> None:
    data = {
        "test_passed": True,
        "passenger": "ann",
        "all_passed": 3,
        "dbPassword": "x",
        "pass": "y",
        "passphrase": "z",
        "passwords": ["p"],
    }
    assert scrub(data) == {
        "test_passed": True,
        "passenger": "ann",
        "all_passed": 3,
        "dbPassword": REDACTED,
        "pass": REDACTED,
        "passphrase": REDACTED,
        "passwords": REDACTED,
    }


def test_the_marker_prefilter_never_skips_a_secret() -> None:
    # scrub_text only runs the regex on strings holding a marker; every form must still match
    from noetl_common._scrub import _SECRET_VALUE

    samples = [
        "Bearer abcdefghijk",
        "auth: Basic dXNlcjpwYXNzd29yZA==",
        JWT,
        PEM,
        "-----BEGIN PRIVATE KEY-----\nMIIE",
        "sk_live_" + "a" * 12,
        "rk_test_" + "b" * 12,
        "sk-" + "c" * 24,
        "gho_" + "d" * 24,
        "github_pat_" + "e" * 24,
        "xoxb-" + "1" * 12,
        "AKIAABCDEFGHIJKLMNOP",
        "AIza" + "f" * 35,
        "glpat-" + "g" * 24,
        "https://u:p@h",
    ]
    for text in samples:
        assert _SECRET_VALUE.search(text), text
        assert scrub_text(text) == _SECRET_VALUE.sub(REDACTED, text) != text


def test_the_suites_own_api_tokens_are_redacted_and_its_names_are_not() -> None:
    import secrets

    token = "noetl_" + secrets.token_urlsafe(32)
    assert scrub_text(f"sent {token} to the API") == "sent [REDACTED] to the API"
    assert scrub({"note": token}) == {"note": "[REDACTED]"}
    # suite names of the same shape stay readable: all lower case, no digits
    for name in ("noetl_control_api_request_duration_seconds_bucket", "noetl_worker_pool_shared"):
        assert scrub({"note": name}) == {"note": name}
