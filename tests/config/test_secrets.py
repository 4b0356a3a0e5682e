"""Tests for :mod:`butler_tw.config.secrets` and :mod:`butler_tw.config.headers`.

Secret references, ``headers:``, ``auth:`` and ``signing:`` as the config
loader reads them; every problem names its key path and never a secret.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from butler_tw.config import Auth, load_config, parse_config
from butler_tw.config.secrets import has_reference
from tests.config.test_config import FAILURE, ConfigTestCase, hook, with_hooks

HOOK = f"{FAILURE}.webhooks[0]"
SECRET = "s3cr3t-V4lue-9f8e7d"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class SecretTestCase(ConfigTestCase):
    def secret_file(self, content: str, mode: int = 0o600) -> str:
        path = self.mktemp()
        Path(path).write_text(content, encoding="utf-8")
        os.chmod(path, mode)
        return path

    def refused(self, *hooks: dict[str, Any], **kwargs: Any) -> tuple[str, ...]:
        """The problems, each checked to hold no secret."""
        problems = self.problems(with_hooks(*hooks), **kwargs)
        for p in problems:
            self.assertNotIn(SECRET, p)
        return problems


class ReferenceTests(SecretTestCase):
    """``${env:NAME}`` and ``${file:PATH}`` in webhookURL, headers, auth and signing.secret."""

    def test_urlFromEnv(self) -> None:
        config = parse_config(
            with_hooks(hook(webhookURL="${env:HOOK_URL}")),
            environ={"HOOK_URL": f"https://r.example.com/hook?token={SECRET}"},
        )
        self.assertEqual(self.only_hook(config).url, f"https://r.example.com/hook?token={SECRET}")

    def test_referenceInsideAValue(self) -> None:
        config = parse_config(
            with_hooks(
                hook(
                    webhookURL="https://hooks.example.com/services/${env:TOKEN}?x=${env:OTHER}",
                    auth={"type": "header", "name": "Authorization", "value": "GenieKey ${env:TOKEN}"},
                )
            ),
            environ={"TOKEN": SECRET, "OTHER": "2"},
        )
        webhook = self.only_hook(config)
        self.assertEqual(webhook.url, f"https://hooks.example.com/services/{SECRET}?x=2")
        self.assertEqual(webhook.auth, Auth(type="header", secret=f"GenieKey {SECRET}", name="Authorization"))

    def test_fromFile(self) -> None:
        """The file's content, trailing newline stripped; read at every load."""
        path = self.secret_file(f"https://r.example.com/{SECRET}\n")
        doc = with_hooks(hook(webhookURL=f"${{file:{path}}}", headers={"X-Key": f"${{file:{path}}}"}))
        self.assertEqual(self.only_hook(parse_config(doc)).url, f"https://r.example.com/{SECRET}")
        Path(path).write_text("https://r.example.com/rotated\r\n", encoding="utf-8")
        webhook = self.only_hook(parse_config(doc))
        self.assertEqual(webhook.url, "https://r.example.com/rotated")
        self.assertEqual(webhook.headers, (("X-Key", "https://r.example.com/rotated"),))

    def test_fileThroughTheReader(self) -> None:
        """Secret files are read through the config's reader (as CA files are), at every load."""
        seen: list[str] = []

        def reader(path: str) -> bytes:
            seen.append(path)
            if path == "/etc/butler.yaml":
                return (
                    b"Butler:\n  udpServerConfig: {enable: true, serverHost: h, portTaskFailure: 9998}\n"
                    b"  webhookNotification:\n    enable: true\n    reloadTaskFailure:\n      webhooks:\n"
                    b"        - {webhookURL: '${file:/virtual/url}', httpMethod: POST}\n"
                )
            return b"https://virtual.example.com/x\n"

        config = load_config("/etc/butler.yaml", reader=reader, mode=lambda path: None)
        self.assertEqual(seen, ["/etc/butler.yaml", "/virtual/url"])
        self.assertEqual(self.only_hook(config).url, "https://virtual.example.com/x")

    def test_worldReadableWarned(self) -> None:
        open_ = self.secret_file(SECRET, 0o644)
        closed = self.secret_file(SECRET, 0o640)
        config = parse_config(
            with_hooks(hook(headers={"X-Open": f"${{file:{open_}}}", "X-Closed": f"${{file:{closed}}}"}))
        )
        self.assertEqual(
            config.warnings(),
            [
                f"{HOOK}.headers.X-Open: ${{file:{open_}}}: the file is readable by every user of this host "
                f"(mode 0644); make it readable by the daemon's user only (chmod o-rwx {open_})"
            ],
        )
        self.assertNotIn(SECRET, "".join(config.warnings()))

    def test_modeInjected(self) -> None:
        config = parse_config(
            with_hooks(hook(headers={"X-A": "${file:/v/a}"})), reader=lambda p: b"a", mode=lambda p: 0o604
        )
        self.assertIn("(mode 0604)", config.warnings()[0])

    def test_missingEnv(self) -> None:
        self.assertEqual(
            self.refused(
                hook(
                    webhookURL="${env:HOOK_URL}",
                    headers={"X-Token": "${env:EMPTY}"},
                    auth={"type": "bearer", "token": "${env:NO_TOKEN}"},
                    signing={"secret": "${env:NO_SIGNING}"},
                ),
                environ={"EMPTY": ""},
            ),
            (
                f"{HOOK}.webhookURL: ${{env:HOOK_URL}}: the environment variable HOOK_URL is not set",
                f"{HOOK}.headers.X-Token: ${{env:EMPTY}}: the environment variable EMPTY is empty",
                f"{HOOK}.auth.token: ${{env:NO_TOKEN}}: the environment variable NO_TOKEN is not set",
                f"{HOOK}.signing.secret: ${{env:NO_SIGNING}}: the environment variable NO_SIGNING is not set",
            ),
        )

    def test_defaultEnvironmentIsTheProcess(self) -> None:
        name = "BUTLER_TW_TEST_SECRET_URL"
        os.environ[name] = "https://env.example.com/x"
        self.addCleanup(os.environ.pop, name)
        config = parse_config(with_hooks(hook(webhookURL=f"${{env:{name}}}")))
        self.assertEqual(self.only_hook(config).url, "https://env.example.com/x")

    def test_missingOrEmptyFile(self) -> None:
        missing = os.path.abspath(self.mktemp())
        empty = self.secret_file("\n")
        directory = os.path.dirname(empty)
        self.assertEqual(
            self.refused(
                hook(
                    webhookURL=f"${{file:{missing}}}",
                    auth={"type": "basic", "username": "u", "password": f"${{file:{empty}}}"},
                    headers={"X-Dir": f"${{file:{directory}}}"},
                )
            ),
            (
                f"{HOOK}.webhookURL: ${{file:{missing}}}: file not found",
                f"{HOOK}.headers.X-Dir: ${{file:{directory}}}: cannot read the file: Is a directory",
                f"{HOOK}.auth.password: ${{file:{empty}}}: the file is empty",
            ),
        )

    def test_badReferences(self) -> None:
        self.assertEqual(
            self.refused(
                hook(
                    webhookURL="${env:URL",
                    headers={
                        "X-A": "${ENV:A}",
                        "X-B": f"${{env:{SECRET}}}",
                        "X-C": "${file:}",
                        "X-D": "${not a reference}",
                    },
                )
            ),
            (
                f"{HOOK}.webhookURL: the reference ${{env:... has no closing '}}'",
                f"{HOOK}.headers.X-A: unknown reference ${{ENV:...}}: a secret is referred to as "
                "${env:NAME} or ${file:/path}",
                f"{HOOK}.headers.X-B: ${{env:...}}: what follows 'env:' is not an environment variable "
                "name (letters, digits and '_')",
                f"{HOOK}.headers.X-C: ${{file:}}: no file named",
            ),
        )

    def test_resolvedUrlIsChecked(self) -> None:
        """The URL rule sees the resolved URL: a bad one is refused, without its value."""
        self.assertEqual(
            self.refused(hook(webhookURL="${env:U}"), environ={"U": f"https://r.example.com/{SECRET} x"}),
            (f"{HOOK}.webhookURL: contains white space",),
        )

    def test_disabledNotificationsAreQuiet(self) -> None:
        """Below webhookNotification.enable: false, a missing secret is no problem (as other rules)."""
        doc = with_hooks(hook(webhookURL="${env:NOT_SET}"))
        doc["Butler"]["webhookNotification"]["enable"] = False
        self.assertFalse(parse_config(doc, environ={}).notificationsEnabled)

    def test_hasReference(self) -> None:
        self.assertTrue(has_reference("a${env:X}b"))
        self.assertTrue(has_reference("${file:/x}"))
        self.assertFalse(has_reference("${other:x} $HOME {env:X}"))


class HeaderTests(SecretTestCase):
    """``headers:``: valid names, values without line breaks or control characters, none of ours."""

    def test_accepted(self) -> None:
        config = parse_config(
            with_hooks(
                hook(
                    headers={"X-Api-Key": SECRET, "User-Agent": "ops/1", "X-Tab": "a\tb", "X-L1": "caf\u00e9"}
                )
            )
        )
        self.assertEqual(
            self.only_hook(config).headers,
            (("X-Api-Key", SECRET), ("User-Agent", "ops/1"), ("X-Tab", "a\tb"), ("X-L1", "caf\u00e9")),
        )

    def test_notShownInRepr(self) -> None:
        config = parse_config(
            with_hooks(
                hook(
                    headers={"X-Api-Key": SECRET},
                    auth={"type": "basic", "username": "svc", "password": SECRET},
                    signing={"secret": WHSEC},
                )
            )
        )
        webhook = self.only_hook(config)
        shown = repr(webhook) + repr(webhook.auth) + str(webhook)
        self.assertNotIn(SECRET, shown)
        self.assertNotIn("svc", shown)
        self.assertNotIn(repr(webhook.signingKey), shown)

    def test_injectionRefused(self) -> None:
        self.assertEqual(
            self.refused(
                hook(
                    headers={
                        "X-Crlf": f"{SECRET}\r\nX-Injected: 1",
                        "X-Lf": f"{SECRET}\nX: 1",
                        "X-Cr": f"{SECRET}\r",
                        "X-Nul": f"{SECRET}\0",
                        "X-Del": f"{SECRET}\x7f",
                        "X-Wide": f"{SECRET}\u20ac",
                    }
                )
            ),
            (
                f"{HOOK}.headers.X-Crlf: must not contain a line break (CR or LF)",
                f"{HOOK}.headers.X-Lf: must not contain a line break (CR or LF)",
                f"{HOOK}.headers.X-Cr: must not contain a line break (CR or LF)",
                f"{HOOK}.headers.X-Nul: must not contain control characters (found U+0000)",
                f"{HOOK}.headers.X-Del: must not contain control characters (found U+007F)",
                f"{HOOK}.headers.X-Wide: holds a character a header cannot carry (only ASCII and Latin-1)",
            ),
        )

    def test_injectionFromAReferenceRefused(self) -> None:
        self.assertEqual(
            self.refused(hook(headers={"X-Key": "${env:K}"}), environ={"K": f"{SECRET}\r\nX-Evil: 1"}),
            (f"{HOOK}.headers.X-Key: must not contain a line break (CR or LF)",),
        )

    def test_badNames(self) -> None:
        bad = "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only: no spaces, colons or other characters)"
        self.assertEqual(
            self.refused(
                hook(
                    headers={
                        "X-Bad Name": SECRET,
                        "X-Colon:": SECRET,
                        "X-New\r\nline": SECRET,
                        "": SECRET,
                        "X-\u00e9": SECRET,
                        1: SECRET,
                    }
                )
            ),
            (
                f"{HOOK}.headers.X-Bad Name: {bad}",
                f"{HOOK}.headers.X-Colon:: {bad}",
                f"{HOOK}.headers.X-New\\r\\nline: {bad}",
                f"{HOOK}.headers.: {bad}",
                f"{HOOK}.headers.X-\\xe9: {bad}",
                f"{HOOK}.headers.1: is not a valid header name",
            ),
        )

    def test_forbiddenNames(self) -> None:
        self.assertEqual(
            self.refused(
                hook(
                    headers={
                        "Host": "evil.example.com",
                        "content-length": "0",
                        "Transfer-Encoding": "chunked",
                        "Webhook-Signature": "v1,x",
                        "webhook-id": "x",
                    }
                )
            ),
            (
                f"{HOOK}.headers.Host: cannot be set: the HTTP client sends Host itself",
                f"{HOOK}.headers.content-length: cannot be set: the HTTP client sends content-length itself",
                f"{HOOK}.headers.Transfer-Encoding: cannot be set: the HTTP client sends Transfer-Encoding itself",
                f"{HOOK}.headers.Webhook-Signature: cannot be set: butler-tw sends Webhook-Signature itself "
                "(Standard Webhooks)",
                f"{HOOK}.headers.webhook-id: cannot be set: butler-tw sends webhook-id itself (Standard Webhooks)",
            ),
        )

    def test_shapes(self) -> None:
        self.assertEqual(
            self.refused(hook(headers=["X-A: b"]), hook(headers={"X-Port": 8080, "x-port": "1"})),
            (
                f"{FAILURE}.webhooks[0].headers: expected a mapping of header names to values, got a list",
                f"{FAILURE}.webhooks[1].headers.X-Port: expected a string, got a number (8080) (quote it)",
                f"{FAILURE}.webhooks[1].headers.x-port: is the same header as X-Port (names are not case-sensitive)",
            ),
        )


class AuthTests(SecretTestCase):
    """``auth:``: bearer, basic or header, each with exactly its fields."""

    def auth(self, **auth: Any) -> Auth | None:
        return self.only_hook(parse_config(with_hooks(hook(auth=auth)))).auth

    def test_types(self) -> None:
        self.assertEqual(self.auth(type="bearer", token=SECRET), Auth(type="bearer", secret=SECRET))
        self.assertEqual(
            self.auth(type="Basic", username="svc", password=SECRET),
            Auth(type="basic", secret=SECRET, username="svc"),
        )
        self.assertEqual(
            self.auth(type="header", name="X-Api-Key", value=SECRET),
            Auth(type="header", secret=SECRET, name="X-Api-Key"),
        )
        self.assertIsNone(self.only_hook(parse_config(with_hooks(hook()))).auth)

    def test_fieldsOfTheType(self) -> None:
        self.assertEqual(
            self.refused(
                hook(auth={"type": "bearer"}),
                hook(auth={"type": "basic", "username": "u", "token": SECRET}),
                hook(auth={"type": "header", "value": SECRET}),
                hook(auth={"token": SECRET}),
                hook(auth={"type": "digest", "token": SECRET}),
                hook(auth={"type": "bearer", "tokn": SECRET}),
                hook(auth="bearer"),
            ),
            (
                f"{FAILURE}.webhooks[0].auth.token: missing (type bearer takes token)",
                f"{FAILURE}.webhooks[1].auth.token: is not used by type basic, which takes username and password",
                f"{FAILURE}.webhooks[1].auth.password: missing (type basic takes username and password)",
                f"{FAILURE}.webhooks[2].auth.name: missing (type header takes name and value)",
                f"{FAILURE}.webhooks[3].auth.type: missing (bearer, basic or header)",
                f"{FAILURE}.webhooks[4].auth.type: must be bearer, basic or header, got 'digest'",
                f"{FAILURE}.webhooks[5].auth.tokn: unknown key (did you mean 'token'?)",
                f"{FAILURE}.webhooks[5].auth.token: missing (type bearer takes token)",
                f"{FAILURE}.webhooks[6].auth: expected a mapping, got a string",
            ),
        )

    def test_badValues(self) -> None:
        self.assertEqual(
            self.refused(
                hook(auth={"type": "bearer", "token": f"{SECRET}\r\nX: 1"}),
                hook(auth={"type": "basic", "username": "a:b", "password": SECRET}),
                hook(auth={"type": "header", "name": "Bad Name", "value": SECRET}),
                hook(auth={"type": "header", "name": "Host", "value": SECRET}),
                hook(auth={"type": "header", "name": "X-Key", "value": f"{SECRET}\n"}),
                hook(auth={"type": "bearer", "token": ""}),
            ),
            (
                f"{FAILURE}.webhooks[0].auth.token: must not contain a line break (CR or LF)",
                f"{FAILURE}.webhooks[1].auth.username: must not contain ':' (Basic credentials are user:password)",
                f"{FAILURE}.webhooks[2].auth.name: is not a valid header name (letters, digits and "
                "!#$%&'*+-.^_`|~ only: no spaces, colons or other characters)",
                f"{FAILURE}.webhooks[3].auth.name: cannot be set: the HTTP client sends Host itself",
                f"{FAILURE}.webhooks[4].auth.value: must not contain a line break (CR or LF)",
                f"{FAILURE}.webhooks[5].auth.token: is empty",
            ),
        )

    def test_headerAndAuthClash(self) -> None:
        """The same header from headers: and auth: is refused: it is set in one place."""
        self.assertEqual(
            self.refused(
                hook(headers={"authorization": SECRET}, auth={"type": "bearer", "token": SECRET}),
                hook(headers={"X-Key": SECRET}, auth={"type": "header", "name": "x-key", "value": SECRET}),
            ),
            (
                f"{FAILURE}.webhooks[0].headers.authorization: is also set by auth (type bearer): "
                "set it in one place only",
                f"{FAILURE}.webhooks[1].headers.X-Key: is also set by auth (type header): set it in one place only",
            ),
        )

    def test_authWinsOverUserInfo(self) -> None:
        """User info in the URL and auth: accepted, auth wins, and a warning says so."""
        config = parse_config(
            with_hooks(
                hook(
                    webhookURL=f"https://svc:{SECRET}@r.example.com/x", auth={"type": "bearer", "token": "t"}
                )
            )
        )
        self.assertEqual(
            config.warnings(),
            [
                f"{HOOK}.auth: webhookURL also holds a user name and password: auth wins, and they are not sent",
            ],
        )


class SigningConfigTests(SecretTestCase):
    """``signing.secret``: ``whsec_`` and the key in base64."""

    def test_key(self) -> None:
        webhook = self.only_hook(parse_config(with_hooks(hook(signing={"secret": WHSEC}))))
        self.assertEqual(webhook.signingKey, base64.b64decode(WHSEC[6:]))
        self.assertIsNone(self.only_hook(parse_config(with_hooks(hook()))).signingKey)

    def test_fromEnv(self) -> None:
        config = parse_config(
            with_hooks(hook(signing={"secret": "${env:SIGNING}"})), environ={"SIGNING": WHSEC}
        )
        self.assertEqual(self.only_hook(config).signingKey, base64.b64decode(WHSEC[6:]))

    def test_badSecrets(self) -> None:
        self.assertEqual(
            self.refused(
                hook(signing={"secret": SECRET}),
                hook(signing={"secret": f"whsec_{SECRET}!"}),
                hook(signing={"secret": "whsec_"}),
                hook(signing={}),
                hook(signing={"secret": WHSEC, "algorithm": "v1"}),
            ),
            (
                f"{FAILURE}.webhooks[0].signing.secret: must start with 'whsec_' followed by the key in base64",
                f"{FAILURE}.webhooks[1].signing.secret: the part after 'whsec_' is not valid base64",
                f"{FAILURE}.webhooks[2].signing.secret: the key after 'whsec_' is empty",
                f"{FAILURE}.webhooks[3].signing.secret: missing",
                f"{FAILURE}.webhooks[4].signing.algorithm: unknown key (known keys: secret)",
            ),
        )
