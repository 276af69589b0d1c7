"""crm/http's public helpers (the webhook lead sink uses them too) and the adapters' webhook parsers."""

from __future__ import annotations

import pytest

from callguard.config import AmoCrmConfig, Bitrix24Config
from callguard.crm import WebhookRejected, amocrm, bitrix24
from callguard.crm.http import RetryPolicy, classify, error_for_status, retry_after
from callguard.errors import CrmAuthError, CrmRejectedError, CrmUnavailableError, RateLimitedError


def test_retry_after_reads_delta_seconds_only() -> None:
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"Retry-After": "-1"}) == 0.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after({}) is None and retry_after(None) is None


@pytest.mark.parametrize(("status", "cls"), [(200, None), (204, None), (429, RateLimitedError), (401, CrmAuthError),
                                             (403, CrmAuthError), (408, CrmUnavailableError),
                                             (502, CrmUnavailableError), (400, CrmRejectedError),
                                             (404, CrmRejectedError)])
def test_error_for_status(status: int, cls: type | None) -> None:
    error = error_for_status(status, "x", {"Retry-After": "7"})
    assert (type(error) if error is not None else None) is cls
    if isinstance(error, RateLimitedError):
        assert error.retry_after == 7.0


def test_classify_reads_the_crm_error_codes() -> None:
    assert isinstance(classify("bitrix24", 503, {"error": "QUERY_LIMIT_EXCEEDED"}), RateLimitedError)
    assert isinstance(classify("bitrix24", 400, {"error": "NO_AUTH_FOUND"}), CrmAuthError)
    assert classify("amocrm", 200, None) is None


def test_retry_delay_is_the_shared_backoff_or_retry_after() -> None:
    policy = RetryPolicy(5, 1.0, 30.0)
    assert 0.5 <= policy.delay(0, None) <= 1.0  # attempt 0 = the first retry: base, jittered
    assert 15.0 <= policy.delay(5, None) <= 30.0  # 1 × 2**5 capped at 30, jittered into [50 %, 100 %]
    assert policy.delay(0, 50.0) == 50.0 and policy.delay(0, 500.0) == 120.0  # Retry-After, at most 4 × cap


def test_amocrm_webhook_parse() -> None:
    cfg = AmoCrmConfig(base_url="https://acme.amocrm.ru", webhook_secret="s3cret", account_id=42)
    amocrm.check_webhook_token(cfg, "s3cret")
    for token in ("", "s3cre", "wrong"):
        with pytest.raises(WebhookRejected) as e:
            amocrm.check_webhook_token(cfg, token)
        assert (e.value.status, e.value.reason) == (401, "bad_token")
    form = {"account[id]": ["42"], "account[subdomain]": ["acme"], "contacts[update][0][id]": ["7"],
            "contacts[delete][0][id]": ["9"], "contacts[update][0][name]": ["x"]}
    assert sorted(amocrm.parse_webhook(cfg, form)) == ["7", "9"]
    for bad, why in [({**form, "account[id]": ["1"]}, (401, "wrong_account")),
                     ({**form, "account[subdomain]": ["evil"]}, (401, "wrong_account")),
                     ({"account[id]": ["42"], "account[subdomain]": ["acme"]}, (400, "no_contacts")),
                     ({**form, "contacts[add][1][id]": ["abc"]}, (400, "no_contacts"))]:
        with pytest.raises(WebhookRejected) as e:
            amocrm.parse_webhook(cfg, bad)
        assert (e.value.status, e.value.reason) == why


def test_bitrix24_webhook_parse() -> None:
    cfg = Bitrix24Config(application_token="app-token")
    form = {"event": ["onCrmContactUpdate"], "data[FIELDS][ID]": ["15"], "auth[application_token]": ["app-token"]}
    assert bitrix24.parse_webhook(cfg, form) == ["15"]
    for bad, why in [({**form, "auth[application_token]": ["nope"]}, (401, "bad_token")),
                     ({**form, "event": ["ONCRMDEALADD"]}, (400, "unknown_event")),
                     ({**form, "data[FIELDS][ID]": [""]}, (400, "no_contacts"))]:
        with pytest.raises(WebhookRejected) as e:
            bitrix24.parse_webhook(cfg, bad)
        assert (e.value.status, e.value.reason) == why
    with pytest.raises(WebhookRejected):
        bitrix24.parse_webhook(Bitrix24Config(), {"auth[application_token]": [""]})  # none configured: refused
