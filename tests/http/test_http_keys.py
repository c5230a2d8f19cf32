"""Cache keys: the target URI (RFC 9111 §4, RFC 3986 §6) and Vary (RFC 9111 §4.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from http_factories import hdrs, stored
from hypothesis import given
from hypothesis import strategies as st

from shardcache._http import (
    asgi_url,
    normalize_url,
    primary_key_asgi,
    primary_key_url,
    variant_key,
    vary_matches,
    vary_names,
    vary_values,
)


class TestPrimaryKeyRfc9111Section4:
    def test_head_shares_the_get_entry(self) -> None:
        """RFC 9111 §4 / RFC 9110 §9.3.2: a stored GET response can answer HEAD."""
        url = "https://example.com/a"
        assert primary_key_url("HEAD", url) == primary_key_url("GET", url)
        assert primary_key_asgi("HEAD", "https", "example.com", b"/a") == primary_key_url(
            "GET", url
        )

    def test_other_methods_get_other_keys(self) -> None:
        """RFC 9111 §2: the key includes the method."""
        assert primary_key_url("POST", "http://x/") != primary_key_url("GET", "http://x/")
        assert primary_key_url("POST", "http://x/").startswith("POST ")

    @pytest.mark.parametrize(
        ("url", "normalized"),
        [
            ("HTTP://Example.COM/a", "http://example.com/a"),  # RFC 3986 §6.2.2.1
            ("http://example.com:80/a", "http://example.com/a"),  # §6.2.3 default port
            ("https://example.com:443/a", "https://example.com/a"),
            ("https://example.com:8443/a", "https://example.com:8443/a"),
            ("http://example.com:/a", "http://example.com/a"),  # §6.2.3 empty port
            ("http://example.com:0080/a", "http://example.com/a"),
            ("http://example.com/a#frag", "http://example.com/a"),  # fragment not sent
            ("http://example.com", "http://example.com/"),  # §6.2.3 empty path
            ("http://example.com?q=1", "http://example.com/?q=1"),
            ("http://example.com/a?", "http://example.com/a"),
            ("http://example.com/%7euser/%2f", "http://example.com/~user/%2F"),  # §6.2.2.2
            ("http://example.com/a b/é", "http://example.com/a%20b/%C3%A9"),
            ("http://example.com/100%", "http://example.com/100%25"),
            ("http://[::1]:8080/", "http://[::1]:8080/"),
        ],
    )
    def test_url_normalization(self, url: str, normalized: str) -> None:
        """RFC 3986 §6.2.2 and §6.2.3: equivalent URLs give the same key."""
        assert normalize_url(url, sort_query=False) == normalized

    def test_query_is_sorted_stably_by_name(self) -> None:
        """API §4: sorted query; repeated parameters keep their relative order."""
        assert normalize_url("http://x/?b=2&a=1&b=1&&a=0") == "http://x/?a=1&a=0&b=2&b=1"
        assert primary_key_url("GET", "http://x/?b=2&a=1") == primary_key_url(
            "GET", "http://x/?a=1&b=2"
        )
        assert primary_key_url("GET", "http://x/?t=b&t=a") != primary_key_url(
            "GET", "http://x/?t=a&t=b"
        )

    def test_encoded_separators_stay_encoded(self) -> None:
        """RFC 3986 §2.2: an encoded reserved character is not the same as the character."""
        assert normalize_url("http://x/?a=1%26b%3D2") == "http://x/?a=1%26b%3D2"
        assert normalize_url("http://x/?a=1%26b%3D2") != normalize_url("http://x/?a=1&b=2")

    def test_asgi_key_keeps_the_query_order_by_default(self) -> None:
        """API §3: the ASGI key is method + scheme + host + path + query, as sent."""
        key = primary_key_asgi("GET", "http", "example.com", b"/a", b"b=2&a=1")
        assert key == "GET http://example.com/a?b=2&a=1"
        sorted_key = primary_key_asgi(
            "GET", "http", "example.com", b"/a", b"b=2&a=1", sort_query=True
        )
        assert sorted_key == "GET http://example.com/a?a=1&b=2"

    def test_asgi_key_equals_the_url_key_of_the_same_request(self) -> None:
        url = asgi_url("HTTPS", "Example.com:443", "/caf\u00e9", b"q=%7e")
        assert url == "https://example.com/caf%C3%A9?q=~"
        assert primary_key_url("GET", url, sort_query=False) == primary_key_asgi(
            "GET", "HTTPS", "Example.com:443", "/caf\u00e9", b"q=%7e"
        )
        # The raw path and the decoded path of one request give one key.
        assert asgi_url("http", "h", b"/caf%c3%a9") == asgi_url("http", "h", "/caf\u00e9")
        assert asgi_url("http", "h", b"") == "http://h/"

    @pytest.mark.parametrize(
        "host",
        ["example.com/a", "a b", "evil@example.com", "", "example.com:99999", "ex\u00e4mple"],
    )
    def test_a_host_that_could_alias_another_key_is_refused(self, host: str) -> None:
        """RFC 9110 §7.2 / cache poisoning: Host "example.com/a" must not alias path /a/..."""
        with pytest.raises(ValueError, match="invalid"):
            primary_key_asgi("GET", "http", host, b"/b")

    @pytest.mark.parametrize("url", ["/relative", "example.com/a", "http:///nohost", "1http://x/"])
    def test_a_url_that_is_not_absolute_is_refused(self, url: str) -> None:
        with pytest.raises(ValueError):
            primary_key_url("GET", url)

    def test_asgi_path_must_be_origin_form(self) -> None:
        with pytest.raises(ValueError, match="must start with"):
            asgi_url("http", "example.com", b"a")

    def test_user_information_is_digested(self) -> None:
        """Credentials in a URL never appear in a key, yet two users get two keys."""
        alice = primary_key_url("GET", "https://alice:s3cret@example.com/")
        bob = primary_key_url("GET", "https://bob:hunter2@example.com/")
        assert "s3cret" not in alice and "alice" not in alice
        assert alice != bob
        assert alice.endswith("@example.com/")

    @given(
        st.sampled_from(["http", "HTTPS"]),
        st.sampled_from(["example.com", "EXAMPLE.com:8080", "[::1]"]),
        st.text(alphabet="/abc%20é?&=+~", max_size=20),
    )
    def test_normalization_is_idempotent(self, scheme: str, host: str, rest: str) -> None:
        url = normalize_url(f"{scheme}://{host}/{rest}")
        assert normalize_url(url) == url

    def test_keys_are_stable_across_processes(self) -> None:
        """API §3/§4: keys never depend on Python's randomized hash()."""
        code = textwrap.dedent(
            """
            from shardcache._http import primary_key_url, variant_key
            p = primary_key_url("GET", "http://x/?b=1&a=2")
            print(variant_key(p, {"accept": "text/html", "cookie": None}))
            """
        )
        outputs = set()
        for seed in ("1", "2"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            outputs.add(result.stdout)
        here = variant_key(
            primary_key_url("GET", "http://x/?b=1&a=2"), {"cookie": None, "accept": "text/html"}
        )
        assert outputs == {here + "\n"}


class TestVaryRfc9111Section4_1:
    def test_vary_names_are_lowercased_sorted_and_unique(self) -> None:
        """RFC 9111 §4.1: Vary lists field names, case-insensitive, over several lines."""
        headers = hdrs("Vary: Accept-Encoding ,  ACCEPT", "vary: accept, User-Agent")
        assert vary_names(headers) == ("accept", "accept-encoding", "user-agent")
        assert vary_names(hdrs("Content-Type: x")) == ()
        assert "*" in vary_names(hdrs("Vary: Accept, *"))

    def test_values_are_normalized(self) -> None:
        """RFC 9111 §4.1: whitespace and line splitting do not make requests differ."""
        one_line = vary_values(["accept"], hdrs("Accept: text/html,  application/json"))
        two_lines = vary_values(
            ["accept"], hdrs("accept: text/html ", "ACCEPT:   application/json")
        )
        assert one_line == two_lines == {"accept": "text/html, application/json"}
        collapsed = vary_values(["user-agent"], hdrs("User-Agent: a   b\t c"))
        assert collapsed == {"user-agent": "a b c"}

    def test_absent_is_not_empty(self) -> None:
        """RFC 9111 §4.1: an absent field only matches an absent field."""
        assert vary_values(["accept"], []) == {"accept": None}
        assert vary_values(["accept"], hdrs("Accept: ")) == {"accept": ""}
        assert variant_key("P", {"accept": None}) != variant_key("P", {"accept": ""})

    def test_credentials_are_kept_as_digests(self) -> None:
        """Cookie/Authorization values are not written into the cache in clear."""
        values = vary_values(
            ["cookie", "authorization"], hdrs("Cookie: sid=abc", "Authorization: Basic Zm9v")
        )
        assert values["cookie"] is not None and "sid" not in values["cookie"]
        assert values["authorization"] is not None and "Zm9v" not in values["authorization"]
        assert values != vary_values(["cookie", "authorization"], hdrs("Cookie: sid=abd"))

    def test_variant_key_is_the_primary_key_without_vary(self) -> None:
        assert variant_key("GET http://x/", {}) == "GET http://x/"

    def test_variant_key_depends_on_values_not_on_insertion_order(self) -> None:
        """RFC 9111 §4.1: the secondary key is the nominated request fields' values."""
        a = variant_key("P", {"accept": "a", "accept-language": "en"})
        b = variant_key("P", {"accept-language": "en", "accept": "a"})
        c = variant_key("P", {"accept": "a", "accept-language": "fr"})
        assert a == b != c
        assert a.startswith("P vary=")

    def test_equivalent_requests_share_a_variant(self) -> None:
        """RFC 9111 §4.1: names compared case-insensitively, values whitespace-normalized."""
        names = vary_names(hdrs("Vary: Accept-Language, Accept"))
        first = vary_values(names, hdrs("Accept: text/html", "Accept-Language: en,  fr"))
        second = vary_values(names, hdrs("accept-language: en, fr", "ACCEPT: text/html"))
        assert variant_key("P", first) == variant_key("P", second)

    def test_vary_matches_compares_the_nominated_fields(self) -> None:
        """RFC 9111 §4.1: reuse only when every field named by Vary matches."""
        entry = stored(
            "Vary: Accept-Encoding, Accept",
            vary={"accept": "text/html", "accept-encoding": None},
        )
        assert vary_matches(entry, hdrs("ACCEPT:  text/html", "Cookie: unrelated"))
        assert not vary_matches(entry, hdrs("Accept: application/json"))
        assert not vary_matches(entry, hdrs("Accept: text/html", "Accept-Encoding: gzip"))
        assert not vary_matches(entry, [])

    def test_vary_star_never_matches(self) -> None:
        """RFC 9111 §4.1: a Vary containing "*" always fails to match."""
        assert not vary_matches(stored("Vary: *"), [])

    def test_without_vary_everything_matches(self) -> None:
        assert vary_matches(stored("Content-Type: text/plain"), hdrs("Accept: x"))
