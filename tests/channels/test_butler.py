"""Tests for :mod:`butler_tw.payload` (the HTTP request) and :mod:`butler_tw.redact`."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import attrs
from twisted.trial.unittest import SynchronousTestCase

from butler_tw import __version__
from butler_tw.channels.butler import USER_AGENT, Request, build_request, json_body, query_string, with_query
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.redact import redact_url
from butler_tw.core.wireformat import Parsed, parse

#: The first sample datagram, which is the seed document's example.
SEED_DATAGRAM = (
    b"/scheduler-task-failed/;pro2-win1;Manually triggered reload of Test failing reloads 2;"
    b"Test failing reloads 2;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;"
    b"e7af59a0-c243-480d-9571-08727551a66f;2021-02-16 09:24:59,099;INFO;"
    b"14a81bf5-f81c-4047-b1a1-193b0920de28;Max retries reached"
)

#: The seed's GET example URL.
SEED_GET_URL = (
    "http://someremote.system.com/butler_get?event=Qlik+Sense+reload+failed&hostName=pro2-win1"
    "&user=LAB%5Cgoran&taskName=Manually+triggered+reload+of+Test+failing+reloads+2"
    "&taskId=dec2a02a-1680-44ef-8dc2-e2bfb180af87&appName=Test+failing+reloads+2"
    "&appId=e7af59a0-c243-480d-9571-08727551a66f&logTimeStamp=2021-02-16+09%3A24%3A59%2C099"
    "&logLevel=INFO&executionId=14a81bf5-f81c-4047-b1a1-193b0920de28&logMessage=Max+retries+reached"
)
SEED_QUERY = SEED_GET_URL.split("?", 1)[1]

#: The seed's PUT/POST example body, byte for byte.
SEED_JSON = (
    b'{"event":"Qlik Sense reload failed","hostName":"pro2-win1","user":"LAB\\\\goran",'
    b'"taskName":"Manually triggered reload of Test failing reloads 2",'
    b'"taskId":"dec2a02a-1680-44ef-8dc2-e2bfb180af87","appName":"Test failing reloads 2",'
    b'"appId":"e7af59a0-c243-480d-9571-08727551a66f","logTimeStamp":"2021-02-16 09:24:59,099",'
    b'"logLevel":"INFO","executionId":"14a81bf5-f81c-4047-b1a1-193b0920de28",'
    b'"logMessage":"Max retries reached"}'
)


def seed_alert() -> Alert:
    result = parse(SEED_DATAGRAM)
    assert isinstance(result, Parsed)
    return result.alert


def webhook(url: str = "http://someremote.system.com/butler_get", method: str = "GET") -> Webhook:
    return Webhook(key="reloadTaskFailure.webhooks[0]", description="", url=url, method=method)


class SeedPayloadTests(SynchronousTestCase):
    """The payload is exactly the seed document's."""

    def test_seedJsonIsWhatTheDocSays(self) -> None:
        """Sanity check of the constant: it is the seed's JSON text."""
        self.assertEqual(json.loads(SEED_JSON)["user"], "LAB\\goran")
        self.assertEqual(len(json.loads(SEED_JSON)), 11)

    def test_queryString(self) -> None:
        self.assertEqual(query_string(seed_alert()), SEED_QUERY)

    def test_getUrl(self) -> None:
        request = build_request(seed_alert(), webhook(), timestamp=1613467499)
        self.assertEqual(request.method, "GET")
        self.assertEqual(request.url, SEED_GET_URL)
        self.assertIsNone(request.body)

    def test_jsonBody(self) -> None:
        self.assertEqual(json_body(seed_alert()), SEED_JSON)

    def test_postBody(self) -> None:
        request = build_request(seed_alert(), webhook("http://someremote.system.com/butler", "POST"), 1)
        self.assertEqual(request.method, "POST")
        self.assertEqual(request.url, "http://someremote.system.com/butler")
        self.assertEqual(request.body, SEED_JSON)

    def test_putBody(self) -> None:
        request = build_request(seed_alert(), webhook("https://r.example.com/x", "PUT"), 1)
        self.assertEqual(request.method, "PUT")
        self.assertEqual(request.body, SEED_JSON)

    def test_abortedEvent(self) -> None:
        alert = attrs.evolve(seed_alert(), kind=EventKind.ABORTED)
        self.assertEqual(json.loads(json_body(alert))["event"], "Qlik Sense reload aborted")
        self.assertTrue(query_string(alert).startswith("event=Qlik+Sense+reload+aborted&hostName="))


class EncodingTests(SynchronousTestCase):
    """Non-ASCII, reserved characters and empty fields."""

    def setUp(self) -> None:
        self.alert = attrs.evolve(
            seed_alert(),
            taskName='Omladdning F\u00f6rs\u00e4ljning "Malm\u00f6" \U0001f680',
            appName="",
            appId="",
            logMessage="a&b=c;d+e/f?g#h%i",
        )

    def test_jsonUtf8NotEscaped(self) -> None:
        body = json_body(self.alert)
        self.assertIn(
            '"taskName":"Omladdning F\u00f6rs\u00e4ljning \\"Malm\u00f6\\" \U0001f680"'.encode(), body
        )
        self.assertIn(b'"appName":"","appId":""', body)
        self.assertIn(b'"logMessage":"a&b=c;d+e/f?g#h%i"', body)
        self.assertEqual(json.loads(body.decode("utf-8")), dict(self.alert.fields()))

    def test_queryEncoding(self) -> None:
        query = query_string(self.alert)
        self.assertIn(
            "&taskName=Omladdning+F%C3%B6rs%C3%A4ljning+%22Malm%C3%B6%22+%F0%9F%9A%80&taskId=", query
        )
        self.assertIn("&appName=&appId=&logTimeStamp=", query)
        self.assertTrue(query.endswith("&logMessage=a%26b%3Dc%3Bd%2Be%2Ff%3Fg%23h%25i"))
        self.assertEqual(parse_qsl(query, keep_blank_values=True), self.alert.fields())

    def test_getRoundTrip(self) -> None:
        request = build_request(self.alert, webhook("https://r.example.com/hook?token=abc"), 1)
        parts = urlsplit(request.url)
        self.assertEqual(parts.fragment, "")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        self.assertEqual(pairs[0], ("token", "abc"))
        self.assertEqual(pairs[1:], self.alert.fields())


class UrlTests(SynchronousTestCase):
    """Where the query goes, and what happens to fragments."""

    def test_appendsToExistingQuery(self) -> None:
        request = build_request(seed_alert(), webhook("https://r.example.com/hook?token=abc"), 1)
        self.assertEqual(request.url, f"https://r.example.com/hook?token=abc&{SEED_QUERY}")

    def test_dropsFragment(self) -> None:
        request = build_request(seed_alert(), webhook("https://r.example.com/hook?token=abc#section"), 1)
        self.assertEqual(request.url, f"https://r.example.com/hook?token=abc&{SEED_QUERY}")
        post = build_request(seed_alert(), webhook("https://r.example.com/hook?token=abc#section", "POST"), 1)
        self.assertEqual(post.url, "https://r.example.com/hook?token=abc")

    def test_withQuery(self) -> None:
        self.assertEqual(with_query("http://h/p", "a=1"), "http://h/p?a=1")
        self.assertEqual(with_query("http://h/p?", "a=1"), "http://h/p?a=1")
        self.assertEqual(with_query("http://h/p?x=1&y=2", "a=1"), "http://h/p?x=1&y=2&a=1")
        self.assertEqual(with_query("http://h/p#f", "a=1"), "http://h/p?a=1")
        self.assertEqual(with_query("http://h", "a=1"), "http://h/?a=1")
        self.assertEqual(with_query("https://u:p@h:8443/p", "a=1"), "https://u:p@h:8443/p?a=1")

    def test_postKeepsQueryAndUserInfo(self) -> None:
        url = "https://user:secret@r.example.com:8443/hook?token=abc"
        self.assertEqual(build_request(seed_alert(), webhook(url, "PUT"), 1).url, url)


class HeaderTests(SynchronousTestCase):
    """User-Agent, Content-Type and the Standard Webhooks headers."""

    def test_userAgent(self) -> None:
        self.assertEqual(USER_AGENT, f"butler-tw/{__version__}")
        self.assertEqual(USER_AGENT, "butler-tw/0.1.0")

    def test_getHeaders(self) -> None:
        alert = seed_alert()
        request = build_request(alert, webhook(), timestamp=1613467499)
        self.assertEqual(
            request,
            Request(
                method="GET",
                url=SEED_GET_URL,
                headers=(
                    ("User-Agent", USER_AGENT),
                    ("webhook-id", alert.alertId),
                    ("webhook-timestamp", "1613467499"),
                ),
                body=None,
            ),
        )

    def test_postAndPutHeaders(self) -> None:
        alert = seed_alert()
        for method in ("POST", "PUT"):
            request = build_request(alert, webhook("http://r.example.com/", method), timestamp=42)
            self.assertEqual(
                request.headers,
                (
                    ("User-Agent", USER_AGENT),
                    ("webhook-id", alert.alertId),
                    ("webhook-timestamp", "42"),
                    ("Content-Type", "application/json"),
                ),
                method,
            )

    def test_noContentTypeForGet(self) -> None:
        request = build_request(seed_alert(), webhook(), timestamp=42)
        self.assertNotIn("content-type", [name.lower() for name, _ in request.headers])

    def test_webhookIdFormat(self) -> None:
        alertId = seed_alert().alertId
        self.assertTrue(alertId.startswith("msg_"))
        self.assertEqual(len(alertId), 4 + 32)
        int(alertId[4:], 16)

    def test_webhookIdStable(self) -> None:
        """Same (kind, taskId, executionId): same id, whatever the other fields say."""
        alert = seed_alert()
        other = attrs.evolve(alert, logMessage="Failed to start session", hostName="x", logTimeStamp="later")
        self.assertEqual(alert.alertId, other.alertId)
        self.assertEqual(alert.alertId, seed_alert().alertId)
        first = dict(build_request(alert, webhook(), 1).headers)["webhook-id"]
        second = dict(build_request(other, webhook("http://else.example.com/", "POST"), 999).headers)[
            "webhook-id"
        ]
        self.assertEqual(first, second)

    def test_webhookIdDiffers(self) -> None:
        alert = seed_alert()
        variants = [
            alert,
            attrs.evolve(alert, kind=EventKind.ABORTED),
            attrs.evolve(alert, taskId="dec2a02a-1680-44ef-8dc2-e2bfb180af88"),
            attrs.evolve(alert, executionId="14a81bf5-f81c-4047-b1a1-193b0920de29"),
        ]
        self.assertEqual(len({v.alertId for v in variants}), 4)

    def test_webhookIdWithoutExecutionId(self) -> None:
        """No executionId: the id comes from every field, so two failures of a task differ
        (a receiver de-duplicating on webhook-id must not drop the second); a copy does not."""
        bare = attrs.evolve(seed_alert(), executionId="")
        later = attrs.evolve(bare, logTimeStamp="2021-02-16 09:31:02,412")
        self.assertEqual(bare.alertId, attrs.evolve(seed_alert(), executionId="").alertId)
        self.assertEqual(len({bare.alertId, later.alertId, seed_alert().alertId}), 3)

    def test_webhookIdNotAmbiguous(self) -> None:
        """Field boundaries count: ("ab", "c") and ("a", "bc") differ."""
        alert = seed_alert()
        self.assertNotEqual(
            attrs.evolve(alert, taskId="ab", executionId="c").alertId,
            attrs.evolve(alert, taskId="a", executionId="bc").alertId,
        )


class RedactTests(SynchronousTestCase):
    """redact_url: scheme, host, port and path only."""

    def test_stripsSecrets(self) -> None:
        self.assertEqual(
            redact_url("https://user:s3cret@receiver.example.com/hooks/x?token=abc#frag"),
            "https://receiver.example.com:443/hooks/***",
        )

    def test_defaultPorts(self) -> None:
        self.assertEqual(redact_url("http://example.com/a/b"), "http://example.com:80/a/***")
        self.assertEqual(redact_url("https://example.com/a/b"), "https://example.com:443/a/***")
        self.assertEqual(redact_url("HTTPS://Example.COM/A/B"), "https://example.com:443/A/***")

    def test_explicitPort(self) -> None:
        self.assertEqual(redact_url("http://example.com:8080/a/b?c"), "http://example.com:8080/a/***")
        self.assertEqual(redact_url("https://example.com:80/"), "https://example.com:80/")

    def test_emptyPath(self) -> None:
        self.assertEqual(redact_url("http://example.com"), "http://example.com:80/")
        self.assertEqual(redact_url("http://example.com?token=x"), "http://example.com:80/")

    def test_ipv6(self) -> None:
        self.assertEqual(redact_url("http://[::1]:8080/x/y?token=y"), "http://[::1]:8080/x/***")
        self.assertEqual(redact_url("https://[2001:DB8::1]/hook"), "https://[2001:db8::1]:443/***")
        self.assertEqual(redact_url("http://u:p@[fe80::1]/"), "http://[fe80::1]:80/")

    def test_ipv4(self) -> None:
        self.assertEqual(
            redact_url("http://127.0.0.1:18080/butler/failed"), "http://127.0.0.1:18080/butler/***"
        )

    def test_invalid(self) -> None:
        self.assertEqual(redact_url("http://example.com:token/x"), "<invalid URL>")
        self.assertEqual(redact_url("http://[::1/x"), "<invalid URL>")
        self.assertEqual(redact_url("http://example.com:99999/"), "<invalid URL>")

    def test_neverContainsSecrets(self) -> None:
        secret = "XYZSECRET"
        for url in (
            f"https://{secret}@h/p",
            f"https://u:{secret}@h/p",
            f"https://h/p?{secret}",
            f"https://h/p?token={secret}",
            f"https://h/p#{secret}",
            f"https://h:{secret}/p",
        ):
            self.assertNotIn(secret, redact_url(url), url)

    def test_pathTokensMasked(self) -> None:
        """Slack, Teams and Discord put the secret in the path: every segment after the first is masked."""
        cases = {
            "https://hooks.slack.com/services/T0ABCDE12/B0FGHIJ34/aBcDeFgHiJkLmNoPqRsTuVwX": (
                "https://hooks.slack.com:443/services/***/***/***"
            ),
            "https://contoso.webhook.office.com/webhookb2/6f1c2a3b-1111-4222-8333-944455566677@"
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/IncomingWebhook/0123456789abcdef0123456789abcdef/"
            "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f": (
                "https://contoso.webhook.office.com:443/***/***/***/***/***"
            ),
            "https://discord.com/api/webhooks/123456789012345678/Ab-cD_ef123": (
                "https://discord.com:443/api/***/***/***"
            ),
            "http://h/hooks/abcdefghijklmnopqrstuvwxyzABCDEF": "http://h:80/hooks/***",
            "http://h/p/s%33cr%33t": "http://h:80/p/***",
        }
        for url, expected in cases.items():
            self.assertEqual(redact_url(url), expected, url)

    def test_lettersOnlyTokensMasked(self) -> None:
        """Short tokens of letters only: a capital inside gives them away."""
        self.assertEqual(redact_url("https://h/hook/QhXkZpTrWmNbVcLd"), "https://h:443/hook/***")
        self.assertEqual(redact_url("https://h/Bearer-abcDEFghiJKL"), "https://h:443/***")

    def test_wordLikeTokensMasked(self) -> None:
        """Tokens of lower-case letters read like words: only their position can tell, so it decides."""
        self.assertEqual(
            redact_url("https://hooks.zapier.com/hooks/catch/1234567/abcdefg/"),
            "https://hooks.zapier.com:443/hooks/***/***/***/",
        )
        self.assertEqual(
            redact_url("https://ha.example.com/api/webhook/garage_door"),
            "https://ha.example.com:443/api/***/***",
        )
        self.assertEqual(redact_url("https://ntfy.sh/qlikalertsacme"), "https://ntfy.sh:443/***")

    def test_firstWordSegmentKept(self) -> None:
        """The first segment, if it reads like a word and more path follows; nothing else."""
        self.assertEqual(redact_url("http://h/api/v1/alerts/"), "http://h:80/api/***/***/")
        self.assertEqual(redact_url("http://h/v2/alerts"), "http://h:80/v2/***")
        self.assertEqual(redact_url("http://h/qlik-alerts.json/x"), "http://h:80/qlik-alerts.json/***")
        self.assertEqual(redact_url("http://h/Alerts/failed"), "http://h:80/Alerts/***")
        self.assertEqual(redact_url("http://h/butler_get"), "http://h:80/***")
        self.assertEqual(redact_url("http://h/hook/"), "http://h:80/***/")
        self.assertEqual(redact_url("http://h/"), "http://h:80/")
