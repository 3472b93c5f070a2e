"""The GitHub fake, driven through plain httpx as a GitHub client drives GitHub."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.github import (
    API_VERSION,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    LARGE_FILE,
    FakeGitHub,
)

CALLBACK = "http://127.0.0.1:9/v1/integrations/callback"
API_HEADERS = {"accept": "application/vnd.github+json", "x-github-api-version": API_VERSION}


def pkce() -> tuple[str, str]:
    """A (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(redirect_uris=[CALLBACK]) as fake:
        yield fake


@pytest.fixture
async def http(fake: FakeGitHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=5, trust_env=False) as client:
        yield client


async def token_request(http: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    """POST the token endpoint with the app's client credentials; the JSON answer."""
    form = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, **params}
    response = await http.post(
        "/login/oauth/access_token", data=form, headers={"accept": "application/json"}
    )
    assert response.status_code == 200  # refusals too: GitHub answers them with 200
    body: dict[str, Any] = response.json()
    return body


async def connect(fake: FakeGitHub, http: httpx.AsyncClient) -> dict[str, Any]:
    """The whole web flow: authorize with PKCE, approve, exchange; the token answer."""
    verifier, challenge = pkce()
    callback = await fake.approve(
        fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge)
    )
    code = query_of(callback)["code"]
    return await token_request(http, code=code, redirect_uri=CALLBACK, code_verifier=verifier)


def api(token: str) -> dict[str, str]:
    return {**API_HEADERS, "authorization": f"Bearer {token}"}


# ---- OAuth: authorize -----------------------------------------------------------------


async def test_approve_redirects_to_the_callback_with_a_code_and_the_state(
    fake: FakeGitHub,
) -> None:
    """Authorize with PKCE answers a 302 to the registered redirect URI carrying code and state."""
    _, challenge = pkce()
    callback = await fake.approve(
        fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge, state="s-42")
    )
    assert callback.startswith(CALLBACK + "?")
    params = query_of(callback)
    assert set(params) == {"code", "state"}
    assert params["state"] == "s-42"
    assert len(params["code"]) == 20
    request = fake.requests_to("authorize")[0]
    assert request.query["code_challenge_method"] == ["S256"]


async def test_deny_redirects_with_access_denied(fake: FakeGitHub) -> None:
    """A user who cancels comes back with error=access_denied, a description and the state."""
    _, challenge = pkce()
    callback = await fake.deny(
        fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge, state="s-1")
    )
    params = query_of(callback)
    assert params["error"] == "access_denied"
    assert params["error_description"] == "The user has denied your application access."
    assert params["state"] == "s-1"
    assert "code" not in params


async def test_authorize_refuses_unregistered_redirects_unknown_clients_and_missing_pkce(
    fake: FakeGitHub,
) -> None:
    """An unregistered redirect_uri goes back to the registered one with redirect_uri_mismatch;
    an unknown client_id is a 404 page; no code_challenge is invalid_request (require_pkce)."""
    _, challenge = pkce()
    elsewhere = fake.authorize_url(redirect_uri="http://evil.test/cb", code_challenge=challenge)
    callback = await fake.approve(elsewhere)
    assert callback.startswith(CALLBACK + "?")
    assert query_of(callback)["error"] == "redirect_uri_mismatch"
    no_pkce = await fake.approve(fake.authorize_url(redirect_uri=CALLBACK))
    assert query_of(no_pkce)["error"] == "invalid_request"
    unknown = fake.authorize_url(code_challenge=challenge).replace(DEFAULT_CLIENT_ID, "nope")
    with pytest.raises(AssertionError, match="404"):
        await fake.approve(unknown)


# ---- OAuth: the token endpoint ------------------------------------------------------------


async def test_exchange_issues_expiring_github_app_tokens(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """A GitHub App's code exchange gives ghu_/ghr_ tokens with lifetimes; the token works."""
    answer = await connect(fake, http)
    assert set(answer) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "scope",
        "token_type",
    }
    assert answer["access_token"].startswith("ghu_")
    assert answer["refresh_token"].startswith("ghr_")
    assert (answer["expires_in"], answer["refresh_token_expires_in"]) == (28800, 15811200)
    assert (answer["scope"], answer["token_type"]) == ("", "bearer")
    user = await http.get("/user", headers=api(answer["access_token"]))
    assert user.status_code == 200
    assert user.json()["login"] == "octocat"
    assert "x-oauth-scopes" not in user.headers


async def test_oauth_app_tokens_carry_scopes_and_do_not_expire() -> None:
    """An OAuth App answers {access_token, token_type, scope} with a gho_ token and reports
    the granted scopes in x-oauth-scopes."""
    async with (
        FakeGitHub(redirect_uris=[CALLBACK], app_kind="oauth_app") as fake,
        httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as http,
    ):
        verifier, challenge = pkce()
        url = fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge, scope="repo user")
        code = query_of(await fake.approve(url))["code"]
        answer = await token_request(http, code=code, redirect_uri=CALLBACK, code_verifier=verifier)
        assert set(answer) == {"access_token", "token_type", "scope"}
        assert answer["access_token"].startswith("gho_")
        assert answer["scope"] == "repo,user"
        user = await http.get("/user", headers=api(answer["access_token"]))
        assert user.headers["x-oauth-scopes"] == "repo, user"


async def test_the_token_endpoint_answers_form_encoded_without_accept_json(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """Without Accept: application/json GitHub answers application/x-www-form-urlencoded."""
    verifier, challenge = pkce()
    code = query_of(
        await fake.approve(fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge))
    )["code"]
    response = await http.post(
        "/login/oauth/access_token",
        data={
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
    )
    assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert query_of("?" + response.text)["access_token"].startswith("ghu_")


async def test_exchange_refusals_are_http_200_with_an_error(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """Wrong secret, wrong verifier, another redirect_uri, an unknown code: 200 with GitHub's
    error codes and descriptions; the code still works once after refusals that did not
    consume it, and never twice."""
    verifier, challenge = pkce()
    code = query_of(
        await fake.approve(fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge))
    )["code"]
    good = {"code": code, "redirect_uri": CALLBACK, "code_verifier": verifier}
    wrong_secret = await token_request(http, **good, client_secret="wrong")
    assert wrong_secret["error"] == "incorrect_client_credentials"
    assert wrong_secret["error_description"] == (
        "The client_id and/or client_secret passed are incorrect."
    )
    assert wrong_secret["error_uri"].endswith("#incorrect-client-credentials")
    bad_verifier = await token_request(http, **{**good, "code_verifier": pkce()[0]})
    assert bad_verifier["error"] == "bad_code_verifier"
    elsewhere = await token_request(http, **{**good, "redirect_uri": "http://127.0.0.1:9/other"})
    assert elsewhere["error"] == "redirect_uri_mismatch"
    unknown = await token_request(http, **{**good, "code": "0" * 20})
    assert unknown["error"] == "bad_verification_code"
    assert unknown["error_description"] == "The code passed is incorrect or expired."
    assert "access_token" in await token_request(http, **good)
    assert (await token_request(http, **good))["error"] == "bad_verification_code"
    assert len(fake.code_exchanges) == 6


async def test_codes_expire(fake: FakeGitHub, http: httpx.AsyncClient) -> None:
    """A code older than code_ttl (10 minutes) is bad_verification_code."""
    verifier, challenge = pkce()
    code = query_of(
        await fake.approve(fake.authorize_url(redirect_uri=CALLBACK, code_challenge=challenge))
    )["code"]
    fake.advance(601)
    answer = await token_request(http, code=code, redirect_uri=CALLBACK, code_verifier=verifier)
    assert answer["error"] == "bad_verification_code"


async def test_refresh_rotates_the_pair_and_retires_the_old_one(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """grant_type=refresh_token gives a new pair; the old access token stops working."""
    first = await connect(fake, http)
    second = await token_request(
        http, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    old = await http.get("/user", headers=api(first["access_token"]))
    assert old.status_code == 401
    new = await http.get("/user", headers=api(second["access_token"]))
    assert new.status_code == 200
    assert len(fake.refresh_requests) == 1


async def test_a_reused_refresh_token_revokes_the_whole_grant(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """Presenting a used refresh token again is bad_refresh_token and ends every token of the
    grant, the newest pair included."""
    first = await connect(fake, http)
    second = await token_request(
        http, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    again = await token_request(
        http, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert again["error"] == "bad_refresh_token"
    assert again["error_description"] == "The refresh token passed is incorrect or expired."
    assert (await http.get("/user", headers=api(second["access_token"]))).status_code == 401
    third = await token_request(
        http, grant_type="refresh_token", refresh_token=second["refresh_token"]
    )
    assert third["error"] == "bad_refresh_token"
    assert fake.live_tokens() == []


async def test_expired_and_revoked_tokens_are_bad_credentials(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """An expired access token and one whose authorization the user removed are 401s with
    GitHub's body; a request without a token is 401 Requires authentication."""
    answer = await connect(fake, http)
    fake.expire(answer["access_token"])
    expired = await http.get("/user", headers=api(answer["access_token"]))
    assert expired.status_code == 401
    assert expired.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    fresh = fake.issue_tokens()
    fake.revoke_authorization()
    assert (await http.get("/user", headers=api(fresh["access_token"]))).status_code == 401
    anonymous = await http.get("/user", headers=API_HEADERS)
    assert anonymous.json()["message"] == "Requires authentication"


async def test_revoke_grant_needs_basic_client_auth_and_ends_every_token(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """DELETE /applications/{client_id}/grant with the client's Basic auth and a live token is
    204 and kills the grant; wrong client credentials or a dead token are 404, no token 422."""
    answer = await connect(fake, http)
    url = f"/applications/{DEFAULT_CLIENT_ID}/grant"
    body = {"access_token": answer["access_token"]}
    wrong = await http.request(
        "DELETE", url, json=body, auth=(DEFAULT_CLIENT_ID, "wrong"), headers=API_HEADERS
    )
    assert wrong.status_code == 404
    auth = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    missing = await http.request("DELETE", url, json={}, auth=auth, headers=API_HEADERS)
    assert missing.status_code == 422
    revoked = await http.request("DELETE", url, json=body, auth=auth, headers=API_HEADERS)
    assert revoked.status_code == 204
    assert (await http.get("/user", headers=api(answer["access_token"]))).status_code == 401
    refreshed = await token_request(
        http, grant_type="refresh_token", refresh_token=answer["refresh_token"]
    )
    assert refreshed["error"] == "bad_refresh_token"
    again = await http.request("DELETE", url, json=body, auth=auth, headers=API_HEADERS)
    assert again.status_code == 404


# ---- REST: headers, rate limits, failures -------------------------------------------------------


async def test_api_requests_need_a_json_accept_and_a_known_version(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """An Accept GitHub does not serve JSON for is a 415; an unknown API version a 400."""
    token = fake.issue_tokens()["access_token"]
    xml = await http.get("/user", headers={**api(token), "accept": "application/xml"})
    assert xml.status_code == 415
    assert "Unsupported 'Accept' header" in xml.json()["message"]
    old = await http.get("/user", headers={**api(token), "x-github-api-version": "2020-01-01"})
    assert old.status_code == 400
    assert old.json()["message"] == "API version '2020-01-01' is not supported."


async def test_rate_limit_headers_count_down_and_run_out(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """Each answer carries x-ratelimit-*; an exhausted budget is GitHub's 403 with remaining 0
    until the reset, and search has a budget of its own."""
    token = fake.issue_tokens()["access_token"]
    first = await http.get("/user", headers=api(token))
    second = await http.get("/user", headers=api(token))
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert int(first.headers["x-ratelimit-remaining"]) - 1 == int(
        second.headers["x-ratelimit-remaining"]
    )
    reset = fake.exhaust_rate_limit("core")
    limited = await http.get("/user", headers=api(token))
    assert limited.status_code == 403
    assert limited.json()["message"].startswith("API rate limit exceeded for user ID ")
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-reset"] == str(reset)
    search = await http.get("/search/issues", params={"q": "is:issue"}, headers=api(token))
    assert search.status_code == 200
    assert search.headers["x-ratelimit-limit"] == "30"
    assert search.headers["x-ratelimit-resource"] == "search"
    fake.advance(3601)
    assert (await http.get("/user", headers=api(token))).status_code == 200


async def test_scripted_failures_follow_authentication(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """fail() answers after authentication: a bad token still gets its 401 and leaves the
    failure queued; a 429 carries retry-after and the secondary-limit message."""
    token = fake.issue_tokens()["access_token"]
    fake.fail("user", 429, retry_after=30)
    fake.fail("user", 502)
    assert (await http.get("/user", headers=api("ghu_nope"))).status_code == 401
    limited = await http.get("/user", headers=api(token))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"
    assert "secondary rate limit" in limited.json()["message"]
    assert "x-ratelimit-remaining" in limited.headers
    assert (await http.get("/user", headers=api(token))).status_code == 502
    assert (await http.get("/user", headers=api(token))).status_code == 200


async def test_hold_keeps_requests_waiting_until_released(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """A held endpoint records its requests and answers them only after release()."""
    token = fake.issue_tokens()["access_token"]
    fake.hold("user")
    pending = asyncio.create_task(http.get("/user", headers=api(token)))
    await fake.wait_for_requests(1, "user")
    assert not pending.done()
    fake.release("user")
    assert (await pending).status_code == 200


async def test_unknown_query_parameters_are_refused(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """The fake is stricter than GitHub: an unknown query parameter is a 400 saying so."""
    token = fake.issue_tokens()["access_token"]
    response = await http.get("/user/repos", params={"perpage": "5"}, headers=api(token))
    assert response.status_code == 400
    assert response.json()["message"].startswith("fake: unknown query parameter 'perpage'")


# ---- REST: data ------------------------------------------------------------------------------


async def test_user_repos_pages_with_a_link_header(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """/user/repos lists the user's own and collaborator repositories (not others' private
    ones), per_page at most 100, with next/last and prev/first links."""
    for n in range(5):
        fake.add_repo(f"octocat/repo-{n}", private=n == 0)
    fake.add_repo("hubot/shared", collaborators=["octocat"])
    fake.add_repo("hubot/secret", private=True)
    token = fake.issue_tokens()["access_token"]
    first = await http.get("/user/repos", params={"per_page": "4"}, headers=api(token))
    assert [r["full_name"] for r in first.json()] == [
        "hubot/shared",
        "octocat/repo-0",
        "octocat/repo-1",
        "octocat/repo-2",
    ]
    links = first.links
    assert set(links) == {"next", "last"}
    assert query_of(links["next"]["url"]) == {"per_page": "4", "page": "2"}
    second = await http.get(links["next"]["url"], headers=api(token))
    assert [r["full_name"] for r in second.json()] == ["octocat/repo-3", "octocat/repo-4"]
    assert set(second.links) == {"prev", "first"}
    private = await http.get("/user/repos", params={"visibility": "private"}, headers=api(token))
    assert [r["full_name"] for r in private.json()] == ["octocat/repo-0"]
    repo = private.json()[0]
    assert repo["permissions"]["admin"] is True
    assert repo["owner"]["login"] == "octocat"
    capped = await http.get("/user/repos", params={"per_page": "500"}, headers=api(token))
    assert len(capped.json()) == 6


async def test_search_needs_is_issue_and_understands_qualifiers(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """q without is:issue/is:pull-request is a 422; repo:, label:, is:open and words filter;
    pull requests are left out of is:issue; total_count counts every match."""
    repo = fake.add_repo("octocat/hello")
    crash = fake.add_issue(repo, "App crashes on start", body="Segfault", labels=["bug"])
    fake.add_issue(repo, "Crash in docs build", state="closed", labels=["bug"])
    fake.add_issue(repo, "Fix the crash", pull_request=True)
    fake.add_issue(fake.add_repo("hubot/other"), "crash elsewhere", labels=["bug"])
    token = fake.issue_tokens()["access_token"]

    async def search(q: str, **params: str) -> httpx.Response:
        return await http.get("/search/issues", params={"q": q, **params}, headers=api(token))

    refused = await search("crash")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["message"] == (
        "Query must include 'is:issue' or 'is:pull-request'"
    )
    found = await search("crash repo:octocat/hello label:bug is:open is:issue")
    assert found.status_code == 200
    body = found.json()
    assert body["total_count"] == 1
    assert body["incomplete_results"] is False
    item = body["items"][0]
    assert item["number"] == crash.number
    assert item["repository_url"].endswith("/repos/octocat/hello")
    assert [label["name"] for label in item["labels"]] == ["bug"]
    assert "pull_request" not in item
    every = await search("crash is:issue", per_page="2")
    assert every.json()["total_count"] == 3
    assert len(every.json()["items"]) == 2
    assert "next" in every.links
    prs = await search("crash is:pr")
    assert [i["title"] for i in prs.json()["items"]] == ["Fix the crash"]


async def test_issues_and_comments_are_read_and_created(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """GET an issue and its comments; POST an issue (201, Location, recorded) and a comment;
    GitHub's validation errors for a missing title or empty body; 404s for the unknown."""
    repo = fake.add_repo("octocat/hello")
    issue = fake.add_issue(repo, "Bug", body="Broken", author="hubot")
    fake.add_comment(issue, "Same here", author="hubot")
    token = fake.issue_tokens()["access_token"]
    got = await http.get("/repos/octocat/hello/issues/1", headers=api(token))
    assert got.json()["user"]["login"] == "hubot"
    assert got.json()["comments"] == 1
    assert got.json()["html_url"] == "https://github.com/octocat/hello/issues/1"
    comments = await http.get("/repos/octocat/hello/issues/1/comments", headers=api(token))
    assert [c["body"] for c in comments.json()] == ["Same here"]
    assert (await http.get("/repos/octocat/hello/issues/9", headers=api(token))).status_code == 404
    assert (await http.get("/repos/octocat/nope/issues/1", headers=api(token))).status_code == 404

    no_title = await http.post("/repos/octocat/hello/issues", json={}, headers=api(token))
    assert no_title.status_code == 422
    assert no_title.json()["message"] == 'Invalid request.\n\n"title" wasn\'t supplied.'
    created = await http.post(
        "/repos/octocat/hello/issues",
        json={"title": "New", "body": "Text", "labels": ["bug"], "assignees": ["octocat"]},
        headers=api(token),
    )
    assert created.status_code == 201
    assert created.json()["number"] == 2
    assert created.headers["location"] == created.json()["url"]
    assert [label["name"] for label in created.json()["labels"]] == ["bug"]
    assert [i.title for i in fake.created_issues] == ["New"]
    stranger = await http.post(
        "/repos/octocat/hello/issues",
        json={"title": "x", "assignees": ["ghost"]},
        headers=api(token),
    )
    assert stranger.json()["errors"] == [
        {"value": "ghost", "resource": "Issue", "field": "assignees", "code": "invalid"}
    ]

    empty = await http.post(
        "/repos/octocat/hello/issues/1/comments", json={"body": " "}, headers=api(token)
    )
    assert empty.status_code == 422
    comment = await http.post(
        "/repos/octocat/hello/issues/1/comments", json={"body": "On it"}, headers=api(token)
    )
    assert comment.status_code == 201
    assert comment.json()["user"]["login"] == "octocat"
    assert comment.json()["html_url"].endswith(f"#issuecomment-{comment.json()['id']}")
    assert [c.body for c in fake.created_comments] == ["On it"]
    assert len(fake.created_issues) == 1


async def test_issues_refused_on_archived_and_issueless_repos(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """An archived repository is read-only (403); one with issues off answers 410."""
    fake.add_repo("octocat/old", archived=True)
    fake.add_repo("octocat/quiet", has_issues=False)
    token = fake.issue_tokens()["access_token"]
    archived = await http.post("/repos/octocat/old/issues", json={"title": "x"}, headers=api(token))
    assert archived.status_code == 403
    quiet = await http.post("/repos/octocat/quiet/issues", json={"title": "x"}, headers=api(token))
    assert quiet.status_code == 410
    assert quiet.json()["message"] == "Issues are disabled for this repo"
    assert fake.created_issues == []


async def test_contents_serve_base64_files_and_directories(
    fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """A file comes base64-encoded in 60-character lines with its git blob sha; a directory is
    a list; another branch is read with ref=; an unknown ref or path is a 404; a file over
    1 MB comes without content (encoding "none")."""
    readme = b"# Hello\n" * 20
    repo = fake.add_repo("octocat/hello", files={"README.md": readme, "src/app.py": "print(1)\n"})
    fake.add_file(repo, "src/app.py", "print(2)\n", ref="dev")
    fake.add_file(repo, "big.bin", b"\0" * (LARGE_FILE + 1))
    token = fake.issue_tokens()["access_token"]
    got = await http.get("/repos/octocat/hello/contents/README.md", headers=api(token))
    body = got.json()
    assert (body["type"], body["encoding"], body["size"]) == ("file", "base64", len(readme))
    assert all(len(line) <= 60 for line in body["content"].splitlines())
    assert base64.b64decode(body["content"]) == readme
    blob = hashlib.sha1(b"blob %d\0" % len(readme) + readme, usedforsecurity=False)
    assert body["sha"] == blob.hexdigest()
    top = await http.get("/repos/octocat/hello/contents", headers=api(token))
    assert [(e["name"], e["type"]) for e in top.json()] == [
        ("README.md", "file"),
        ("big.bin", "file"),
        ("src", "dir"),
    ]
    dev = await http.get(
        "/repos/octocat/hello/contents/src/app.py", params={"ref": "dev"}, headers=api(token)
    )
    assert base64.b64decode(dev.json()["content"]) == b"print(2)\n"
    unknown_ref = await http.get(
        "/repos/octocat/hello/contents/README.md", params={"ref": "nope"}, headers=api(token)
    )
    assert unknown_ref.status_code == 404
    assert unknown_ref.json()["message"] == "No commit found for the ref nope"
    missing = await http.get("/repos/octocat/hello/contents/nope.txt", headers=api(token))
    assert missing.status_code == 404
    big = await http.get("/repos/octocat/hello/contents/big.bin", headers=api(token))
    assert (big.json()["encoding"], big.json()["content"]) == ("none", "")
