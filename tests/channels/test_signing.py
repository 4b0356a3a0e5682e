"""Tests for :mod:`butler_tw.channels.signing` and :mod:`butler_tw.channels.request`.

Headers and auth as sent (pure, then through the real client to a loopback
receiver), Standard Webhooks signatures (the specification's own vector),
the verifier, and a retry signed anew by the dispatcher.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.channels import butler
from butler_tw.channels.request import build_request
from butler_tw.channels.signing import apply_headers, auth_header, sign, signature, verify
from butler_tw.config import Auth, Webhook
from butler_tw.config.headers import signing_key
from butler_tw.core.delivery import Delivery
from butler_tw.core.retry import Outcome, RetryPolicy
from butler_tw.core.stats import Stats
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.delivery.test_dispatcher import FakeSender
from tests.support.receivers import listen_http, make_alert, make_webhook, start_client

#: The example of https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = signing_key(SPEC_SECRET)
ALERT = make_alert()


def hook(url: str = "https://r.example.com/hook", method: str = "POST", **values: Any) -> Webhook:
    return attrs.evolve(make_webhook(url, method), **values)


def spec_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    headers.update(changes)
    return headers


class VectorTests(SynchronousTestCase):
    def test_specificationVector(self) -> None:
        self.assertEqual(signature(KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY), SPEC_SIGNATURE)

    def test_signAddsTheVectorsSignature(self) -> None:
        request = butler.Request(
            "POST",
            "https://r.example.com/",
            (("webhook-id", SPEC_ID), ("webhook-timestamp", str(SPEC_TIMESTAMP))),
            SPEC_BODY,
        )
        signed = sign(request, hook(signingKey=KEY))
        self.assertEqual(signed.headers[-1], ("webhook-signature", SPEC_SIGNATURE))
        self.assertEqual(signed.headers[:-1], request.headers)
        self.assertIs(sign(request, hook()), request)


class ApplyHeadersTests(SynchronousTestCase):
    def base(self, webhook: Webhook) -> butler.Request:
        return butler.build_request(ALERT, webhook, 1700000000)

    def test_customHeadersReplaceOursOfTheSameName(self) -> None:
        webhook = hook(headers=(("X-Api-Key", "k1"), ("user-agent", "ops/1")))
        headers = apply_headers(self.base(webhook), webhook).headers
        names = [n.lower() for n, _ in headers]
        self.assertEqual(names.count("user-agent"), 1)
        self.assertIn(("user-agent", "ops/1"), headers)
        self.assertIn(("X-Api-Key", "k1"), headers)
        self.assertIn(("webhook-id", ALERT.alertId), headers)

    def test_authHeaders(self) -> None:
        self.assertEqual(auth_header(Auth("bearer", "tok")), ("Authorization", "Bearer tok"))
        self.assertEqual(
            auth_header(Auth("basic", "p\u00e4ss:w", username="svc")),
            ("Authorization", "Basic " + base64.b64encode("svc:p\u00e4ss:w".encode()).decode()),
        )
        self.assertEqual(
            auth_header(Auth("header", "GenieKey abc", name="Authorization")),
            ("Authorization", "GenieKey abc"),
        )
        self.assertEqual(auth_header(Auth("header", "abc", name="X-Api-Key")), ("X-Api-Key", "abc"))

    def test_authDropsUserInfo(self) -> None:
        webhook = hook("https://u:p@r.example.com/hook?t=1", auth=Auth("bearer", "tok"))
        request = apply_headers(self.base(webhook), webhook)
        self.assertEqual(request.url, "https://r.example.com/hook?t=1")
        self.assertIn(("Authorization", "Bearer tok"), request.headers)

    def test_nothingToAdd(self) -> None:
        webhook = hook("https://u:p@r.example.com/hook")
        request = self.base(webhook)
        self.assertIs(apply_headers(request, webhook), request)

    def test_pipelineSignsWhatIsSent(self) -> None:
        """build_request: the signature covers the body and the headers' id and timestamp."""
        webhook = hook(headers=(("X-A", "1"),), auth=Auth("bearer", "tok"), signingKey=KEY)
        request = build_request(ALERT, webhook, 1700000000)
        headers = dict(request.headers)
        self.assertEqual(headers["X-A"], "1")
        self.assertEqual(headers["Authorization"], "Bearer tok")
        self.assertIsNone(verify(SPEC_SECRET, headers, request.body or b"", now=1700000000))

    def test_getSignsTheEmptyBody(self) -> None:
        webhook = hook(method="GET", signingKey=KEY)
        request = build_request(ALERT, webhook, 1700000000)
        self.assertIsNone(request.body)
        headers = dict(request.headers)
        self.assertEqual(headers["webhook-signature"], signature(KEY, ALERT.alertId, "1700000000", b""))
        self.assertIsNone(verify(SPEC_SECRET, headers, b"", now=1700000000))


class VerifyTests(SynchronousTestCase):
    def test_genuine(self) -> None:
        self.assertIsNone(verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP))
        # names in any case; the bare base64 key works too; one of several signatures
        upper = {k.upper(): v for k, v in spec_headers().items()}
        self.assertIsNone(verify(SPEC_SECRET[6:], upper, SPEC_BODY, now=SPEC_TIMESTAMP + 299))
        several = spec_headers(**{"webhook-signature": f"v1,AAAA {SPEC_SIGNATURE} v1a,xyz"})
        self.assertIsNone(verify(SPEC_SECRET, several, SPEC_BODY, now=SPEC_TIMESTAMP))

    def test_tampered(self) -> None:
        mismatch = "the signature does not match (another secret, or the body or headers were changed)"
        self.assertEqual(verify(SPEC_SECRET, spec_headers(), SPEC_BODY + b" ", now=SPEC_TIMESTAMP), mismatch)
        self.assertEqual(
            verify(SPEC_SECRET, spec_headers(**{"webhook-id": "msg_other"}), SPEC_BODY, now=SPEC_TIMESTAMP),
            mismatch,
        )
        moved = spec_headers(**{"webhook-timestamp": str(SPEC_TIMESTAMP + 1)})
        self.assertEqual(verify(SPEC_SECRET, moved, SPEC_BODY, now=SPEC_TIMESTAMP), mismatch)
        other = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()
        self.assertEqual(verify(other, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP), mismatch)

    def test_timestampTolerance(self) -> None:
        self.assertEqual(
            verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP + 301),
            "the timestamp is 301 s old (more than 300 s: a replay, or a clock is wrong)",
        )
        self.assertEqual(
            verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP - 400),
            "the timestamp is 400 s ahead (more than 300 s: a clock is wrong)",
        )
        self.assertIsNone(
            verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP + 3000, tolerance=3600)
        )

    def test_missingOrMalformed(self) -> None:
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            headers = spec_headers()
            del headers[name]
            self.assertEqual(verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP), f"no {name} header")
        self.assertEqual(
            verify(SPEC_SECRET, spec_headers(**{"webhook-timestamp": "soon"}), SPEC_BODY, now=SPEC_TIMESTAMP),
            "webhook-timestamp is not a whole number of seconds",
        )
        self.assertEqual(
            verify(
                SPEC_SECRET, spec_headers(**{"webhook-signature": "v2,abc"}), SPEC_BODY, now=SPEC_TIMESTAMP
            ),
            "webhook-signature holds no v1 signature",
        )

    def test_badSecret(self) -> None:
        e = self.assertRaises(ValueError, verify, "whsec_not base64!", spec_headers(), SPEC_BODY, 0)
        self.assertEqual(str(e), "the part after 'whsec_' is not valid base64")


class SignedRetryTests(SynchronousTestCase):
    def test_eachAttemptSignedWithItsTimestamp(self) -> None:
        """The dispatcher's second attempt has a later timestamp and its own valid signature."""
        clock = Clock()
        clock.advance(1_700_000_000)
        sender = FakeSender()
        webhook = hook(signingKey=KEY, retry=RetryPolicy(schedule=(0.0, 10.0)))
        dispatcher = Dispatcher(webhook, sender, MemoryOutbox(), clock, Stats(), rand=lambda: 0.5)
        now = clock.seconds()
        dispatcher.submit(Delivery(ALERT, webhook.key, acceptedAt=now, dueAt=now))
        sender.finish(Outcome(status=500))
        clock.advance(10)
        self.assertEqual(sender.attempts, 2)
        sender.finish(Outcome(status=200))
        first, second = (dict(r.headers) for r in sender.requests)
        self.assertEqual(first["webhook-id"], second["webhook-id"])
        self.assertEqual(int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]), 10)
        self.assertNotEqual(first["webhook-signature"], second["webhook-signature"])
        for request, at in zip(sender.requests, (now, now + 10), strict=True):
            self.assertIsNone(verify(SPEC_SECRET, dict(request.headers), request.body or b"", now=at))
        # the first signature is no good for the second attempt's timestamp
        replayed = dict(second, **{"webhook-signature": first["webhook-signature"]})
        self.assertIsNotNone(verify(SPEC_SECRET, replayed, sender.requests[1].body or b"", now=now + 10))


class ReceiverTests(TestCase):
    """Each auth type and custom header, sent by the real client to a loopback receiver."""

    timeout = 20

    @inlineCallbacks
    def send(self, webhook: Webhook) -> Any:
        client = start_client(self, webhook)
        outcome = yield client.send(build_request(ALERT, webhook, 1700000000))
        self.assertEqual(outcome.status, 200)

    @inlineCallbacks
    def test_authTypes(self) -> Any:
        receiver = listen_http(self)
        basic = base64.b64encode("svc:p\u00e4ss:w0rd".encode()).decode()
        cases = [
            ("/bearer", Auth("bearer", "tok-123"), "authorization", "Bearer tok-123"),
            ("/basic", Auth("basic", "p\u00e4ss:w0rd", username="svc"), "authorization", f"Basic {basic}"),
            ("/genie", Auth("header", "GenieKey g-1", name="Authorization"), "authorization", "GenieKey g-1"),
            ("/apikey", Auth("header", "k-1", name="X-Api-Key"), "x-api-key", "k-1"),
        ]
        for path, auth, _, _ in cases:
            yield self.send(hook(receiver.url(path), auth=auth))
        seen = {r.path: r for r in receiver.requests}
        for path, _, name, value in cases:
            self.assertEqual(seen[path].headers.get(name), [value], path)
        self.assertNotIn("authorization", seen["/apikey"].headers)

    @inlineCallbacks
    def test_authWinsOverUserInfo(self) -> Any:
        receiver = listen_http(self)
        url = f"http://u:p@127.0.0.1:{receiver.port}"
        yield self.send(hook(f"{url}/bearer", auth=Auth("bearer", "tok")))
        yield self.send(hook(f"{url}/apikey", auth=Auth("header", "k", name="X-Api-Key")))
        yield self.send(hook(f"{url}/userinfo"))
        seen = {r.path: r for r in receiver.requests}
        self.assertEqual(seen["/bearer"].headers["authorization"], ["Bearer tok"])
        self.assertNotIn("authorization", seen["/apikey"].headers)
        userinfo = base64.b64encode(b"u:p").decode()
        self.assertEqual(seen["/userinfo"].headers["authorization"], [f"Basic {userinfo}"])

    @inlineCallbacks
    def test_customHeadersAndSignature(self) -> Any:
        receiver = listen_http(self)
        webhook = hook(
            receiver.url("/hook"),
            headers=(("X-Tenant", "acme\tqlik"), ("X-Latin", "caf\u00e9"), ("User-Agent", "ops/1")),
            signingKey=KEY,
        )
        yield self.send(webhook)
        (request,) = receiver.requests
        self.assertEqual(request.headers["x-tenant"], ["acme\tqlik"])
        self.assertEqual(request.headers["x-latin"], ["caf\u00e9"])
        self.assertEqual(request.headers["user-agent"], ["ops/1"])
        self.assertEqual(json.loads(request.body)["taskId"], ALERT.taskId)
        headers = {k: v[0] for k, v in request.headers.items()}
        self.assertIsNone(verify(SPEC_SECRET, headers, request.body, now=1700000000))
