"""The GitHub tools a connection provides, as the model sees and calls them.

Seven tools, namespaced ``github__*``: whoami, list_repos, search_issues,
get_issue, get_file (reads), create_issue and comment_issue (side effects:
``side_effecting=True``, so the runner records them before they run and never
repeats one). Each checks its arguments against its schema (the checks live
in ``arguments``) and raises :class:`ToolError` naming the argument at fault;
results are small JSON objects with the fields a model needs, never GitHub's
whole payloads. Lists are paged (``limit`` up to 100, ``page``) and say when
there is more.
"""

from __future__ import annotations

import abc
import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from interlockd.integrations.github import arguments as args
from interlockd.integrations.github.api import MAX_PER_PAGE, GitHubAPI, Page
from interlockd.tools.base import Tool, ToolContext, ToolError
from interlockd.vocabulary import ToolSpec

# How much text a result carries; longer text is cut and says so.
FILE_CHARS = 40_000
ISSUE_BODY_CHARS = 8_000
COMMENT_CHARS = 4_000
EXCERPT_CHARS = 200
# GitHub serves the first 1000 results of a search, no more.
SEARCH_WINDOW = 1000

_PR_QUALIFIER = re.compile(r"(?i)(?:^|\s)-?(?:is|type):(?:pr|pull-request)\b")
_ISSUE_QUALIFIER = re.compile(r"(?i)(?:^|\s)(?:is|type):issue\b")

# ---- compact results ---------------------------------------------------------------------


def _cut(text: str | None, chars: int) -> tuple[str, bool]:
    if not text:
        return "", False
    if len(text) <= chars:
        return text, False
    return text[:chars], True


def _login(user: Any) -> str | None:
    return user.get("login") if isinstance(user, dict) else None


def _label_names(issue: Mapping[str, Any]) -> list[str]:
    return [
        label["name"] if isinstance(label, dict) else str(label)
        for label in issue.get("labels") or []
        if isinstance(label, dict | str)
    ]


def _repo_of(issue: Mapping[str, Any]) -> str | None:
    """owner/name from an issue's ``repository_url`` (``…/repos/{owner}/{name}``)."""
    url = issue.get("repository_url")
    if not isinstance(url, str):
        return None
    parts = url.rstrip("/").split("/")
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 2 else None


def _issue_summary(issue: Mapping[str, Any]) -> dict[str, Any]:
    excerpt, cut = _cut(issue.get("body"), EXCERPT_CHARS)
    return {
        "repo": _repo_of(issue),
        "number": issue.get("number"),
        "title": issue.get("title"),
        "state": issue.get("state"),
        "author": _login(issue.get("user")),
        "labels": _label_names(issue),
        "comments": issue.get("comments"),
        "created_at": issue.get("created_at"),
        "updated_at": issue.get("updated_at"),
        "html_url": issue.get("html_url"),
        "excerpt": excerpt + ("…" if cut else ""),
    }


def _repo_summary(repo: Mapping[str, Any]) -> dict[str, Any]:
    description, cut = _cut(repo.get("description"), EXCERPT_CHARS)
    permissions = repo.get("permissions") or {}
    access = next((level for level in ("admin", "push", "pull") if permissions.get(level)), None)
    return {
        "full_name": repo.get("full_name"),
        "private": repo.get("private"),
        "description": (description + ("…" if cut else "")) or None,
        "language": repo.get("language"),
        "default_branch": repo.get("default_branch"),
        "stars": repo.get("stargazers_count"),
        "open_issues": repo.get("open_issues_count"),
        "archived": repo.get("archived"),
        "updated_at": repo.get("updated_at"),
        "html_url": repo.get("html_url"),
        "access": access,
    }


def _paging(page: int, result: Page, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {"page": page, "has_more": result.next_page is not None}
    if result.next_page is not None:
        out["next_page"] = result.next_page
        out["note"] = f"more {what}: call again with page={result.next_page}"
    return out


# ---- the tools ---------------------------------------------------------------------------


class GitHubTool(Tool):
    """A tool over one connection's :class:`GitHubAPI`."""

    def __init__(self, api: GitHubAPI, *, source_id: str = "") -> None:
        self._api = api
        self.source_id = source_id

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        if not isinstance(arguments, dict):
            raise ToolError("the arguments must be a JSON object")
        args.check_names(arguments, self.spec)
        return await self.run(arguments)

    @abc.abstractmethod
    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Execute with arguments whose names are known (values not yet checked)."""


class WhoAmI(GitHubTool):
    spec = ToolSpec(
        name="github__whoami",
        side_effecting=False,
        description=(
            "Who the connected GitHub account is: login, name, profile URL and, for "
            "OAuth tokens, the granted scopes."
        ),
        parameters=args.object_schema({}),
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        user, scopes = await self._api.user()
        out: dict[str, Any] = {
            "login": user.get("login"),
            "name": user.get("name"),
            "id": user.get("id"),
            "type": user.get("type"),
            "html_url": user.get("html_url"),
            "email": user.get("email"),
            "public_repos": user.get("public_repos"),
            "private_repos": user.get("total_private_repos"),
        }
        if scopes is not None:
            out["scopes"] = scopes
        return out


class ListRepos(GitHubTool):
    spec = ToolSpec(
        name="github__list_repos",
        side_effecting=False,
        description=(
            "List repositories the connected GitHub account owns, collaborates on or reaches "
            "through its organizations, most recently updated first unless sorted otherwise."
        ),
        parameters=args.object_schema(
            {
                "sort": {
                    "type": "string",
                    "enum": ["updated", "pushed", "created", "full_name"],
                    "description": "Order (default updated: most recent first).",
                },
                "visibility": {
                    "type": "string",
                    "enum": ["all", "public", "private"],
                    "description": "Which repositories (default all).",
                },
                "limit": args.limit(30, "repositories"),
                "page": args.PAGE,
            }
        ),
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        sort = args.choice(
            arguments, "sort", ("updated", "pushed", "created", "full_name"), "updated"
        )
        visibility = args.choice(arguments, "visibility", ("all", "public", "private"), "all")
        limit = args.integer(arguments, "limit", default=30, low=1, high=MAX_PER_PAGE)
        page = args.integer(arguments, "page", default=1, low=1)
        result = await self._api.user_repos(
            page=page, per_page=limit, sort=sort, visibility=visibility
        )
        return {
            "repositories": [_repo_summary(r) for r in result.items],
            **_paging(page, result, "repositories"),
        }


class SearchIssues(GitHubTool):
    spec = ToolSpec(
        name="github__search_issues",
        side_effecting=False,
        description=(
            "Search GitHub issues (not pull requests) with GitHub's search syntax: words plus "
            "qualifiers such as repo:owner/name, author:login, label:bug, in:title, "
            "is:open. Returns matching issues, newest first unless sorted otherwise."
        ),
        parameters=args.object_schema(
            {
                "query": {
                    "type": "string",
                    "description": "Search words and qualifiers, e.g. 'crash label:bug'.",
                },
                "repo": {
                    **args.REPO_PROPERTY,
                    "description": "Only this repository (owner/name); optional.",
                },
                "state": {
                    "type": "string",
                    "enum": ["open", "closed", "all"],
                    "description": "Only open or closed issues (default all).",
                },
                "sort": {
                    "type": "string",
                    "enum": ["best-match", "created", "updated", "comments"],
                    "description": "Order (default best-match).",
                },
                "order": {
                    "type": "string",
                    "enum": ["desc", "asc"],
                    "description": "Direction of sort (default desc).",
                },
                "limit": args.limit(20, "issues"),
                "page": args.PAGE,
            },
            required=["query"],
        ),
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        query = args.required_string(arguments, "query", max_chars=256).strip()
        if _PR_QUALIFIER.search(query):
            raise ToolError(
                "github__search_issues searches issues only; remove is:pr / type:pr from 'query'"
            )
        terms = [query]
        if arguments.get("repo") is not None:
            owner, name = args.repo(arguments)
            terms.append(f"repo:{owner}/{name}")
        state = args.choice(arguments, "state", ("open", "closed", "all"), "all")
        if state != "all":
            terms.append(f"is:{state}")
        if not _ISSUE_QUALIFIER.search(query):
            terms.append("is:issue")  # GitHub requires saying issues or pull requests
        sort = args.choice(
            arguments, "sort", ("best-match", "created", "updated", "comments"), "best-match"
        )
        order = args.choice(arguments, "order", ("desc", "asc"), "desc")
        limit = args.integer(arguments, "limit", default=20, low=1, high=MAX_PER_PAGE)
        page = args.integer(arguments, "page", default=1, low=1)
        if (page - 1) * limit >= SEARCH_WINDOW:
            raise ToolError(
                f"GitHub returns only the first {SEARCH_WINDOW} search results; "
                "narrow the query instead of paging further"
            )
        q = " ".join(terms)
        result = await self._api.search_issues(
            q,
            page=page,
            per_page=limit,
            sort=None if sort == "best-match" else sort,
            order=order,
        )
        out: dict[str, Any] = {
            "query": q,
            "total_count": result.total_count,
            "issues": [_issue_summary(i) for i in result.items],
            **_paging(page, result, "issues"),
        }
        if result.incomplete_results:
            out["incomplete_results"] = True
        return out


class GetIssue(GitHubTool):
    spec = ToolSpec(
        name="github__get_issue",
        side_effecting=False,
        description=(
            "Read one issue (or pull request) of a repository by number: its text, labels, "
            "assignees and state, with its comments oldest first."
        ),
        parameters=args.object_schema(
            {
                "repo": args.REPO_PROPERTY,
                "number": {"type": "integer", "minimum": 1, "description": "The issue number."},
                "comments": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_PER_PAGE,
                    "description": "How many comments to include (0-100, default 20).",
                },
                "comments_page": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Which page of comments (default 1: the oldest).",
                },
            },
            required=["repo", "number"],
        ),
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        owner, name = args.repo(arguments)
        number = args.integer(arguments, "number", default=None, low=1)
        per_page = args.integer(arguments, "comments", default=20, low=0, high=MAX_PER_PAGE)
        comments_page = args.integer(arguments, "comments_page", default=1, low=1)
        issue = await self._api.issue(owner, name, number)
        body, cut = _cut(issue.get("body"), ISSUE_BODY_CHARS)
        total = issue.get("comments") if isinstance(issue.get("comments"), int) else 0
        out: dict[str, Any] = {
            "repo": f"{owner}/{name}",
            "number": issue.get("number"),
            "title": issue.get("title"),
            "state": issue.get("state"),
            "state_reason": issue.get("state_reason"),
            "is_pull_request": "pull_request" in issue,
            "author": _login(issue.get("user")),
            "labels": _label_names(issue),
            "assignees": [_login(a) for a in issue.get("assignees") or []],
            "locked": issue.get("locked"),
            "created_at": issue.get("created_at"),
            "updated_at": issue.get("updated_at"),
            "closed_at": issue.get("closed_at"),
            "html_url": issue.get("html_url"),
            "body": body,
        }
        if cut:
            out["body_truncated"] = True
        out["comments_total"] = total
        if per_page and total:
            page = await self._api.issue_comments(
                owner, name, number, page=comments_page, per_page=per_page
            )
            comments = []
            for comment in page.items:
                text, cut = _cut(comment.get("body"), COMMENT_CHARS)
                comments.append(
                    {
                        "id": comment.get("id"),
                        "author": _login(comment.get("user")),
                        "created_at": comment.get("created_at"),
                        "body": text + ("…" if cut else ""),
                    }
                )
            out["comments"] = comments
            out["comments_page"] = comments_page
            if page.next_page is not None:
                out["comments_next_page"] = page.next_page
                out["note"] = f"more comments: call again with comments_page={page.next_page}"
        return out


class GetFile(GitHubTool):
    spec = ToolSpec(
        name="github__get_file",
        side_effecting=False,
        description=(
            "Read a file of a repository (text, up to "
            f"{FILE_CHARS} characters per call; pass offset for more), or list a directory."
        ),
        parameters=args.object_schema(
            {
                "repo": args.REPO_PROPERTY,
                "path": {
                    "type": "string",
                    "description": "Path in the repository, e.g. src/main.py; '' for the top.",
                },
                "ref": {
                    "type": "string",
                    "description": "Branch, tag or commit (default: the default branch).",
                },
                "offset": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Character offset to read from (default 0).",
                },
            },
            required=["repo", "path"],
        ),
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        owner, name = args.repo(arguments)
        path = args.string(arguments, "path", required=True, max_chars=1_000, allow_empty=True)
        assert path is not None
        path = path.strip().strip("/")
        if any(part in (".", "..") for part in path.split("/")):
            raise ToolError("'path' must not contain '.' or '..' segments")
        ref = args.string(arguments, "ref", max_chars=250)
        offset = args.integer(arguments, "offset", default=0, low=0)
        found = await self._api.contents(owner, name, path, ref)
        where = {"repo": f"{owner}/{name}", "path": path, "ref": ref}
        if isinstance(found, list):
            entries = [
                {
                    "name": e.get("name"),
                    "path": e.get("path"),
                    "type": e.get("type"),
                    "size": e.get("size"),
                }
                for e in found
            ]
            return {**where, "type": "dir", "entries": entries}
        kind = found.get("type")
        if kind != "file":
            extra: dict[str, Any] = {
                k: found[k] for k in ("target", "submodule_git_url") if k in found
            }
            return {**where, "type": kind, "sha": found.get("sha"), **extra}
        size = found.get("size")
        if found.get("encoding") != "base64":
            raise ToolError(
                f"{path} is {size} bytes, more than GitHub's contents API returns (1 MB); "
                "it cannot be read with this tool"
            )
        try:
            data = base64.b64decode(str(found.get("content", "")))
        except (binascii.Error, ValueError):
            raise ToolError(f"GitHub sent {path} in a form that does not decode") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return {**where, "type": "file", "sha": found.get("sha"), "size": size, "binary": True}
        if offset and offset >= len(text):
            raise ToolError(f"'offset' {offset} is past the end of {path} ({len(text)} characters)")
        part = text[offset : offset + FILE_CHARS]
        out: dict[str, Any] = {
            **where,
            "type": "file",
            "sha": found.get("sha"),
            "size": size,
            "offset": offset,
            "content": part,
        }
        end = offset + len(part)
        if end < len(text):
            out["truncated"] = True
            out["next_offset"] = end
            out["note"] = f"{len(text) - end} more characters: call again with offset={end}"
        return out


class CreateIssue(GitHubTool):
    spec = ToolSpec(
        name="github__create_issue",
        description=(
            "Open a new issue in a repository. This creates it on GitHub for everyone to see; "
            "only do it when the user asked for it."
        ),
        parameters=args.object_schema(
            {
                "repo": args.REPO_PROPERTY,
                "title": {"type": "string", "description": "The issue's title."},
                "body": {"type": "string", "description": "The issue's text (Markdown)."},
                "labels": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Label names (applied when the account may label issues).",
                },
                "assignees": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Logins to assign.",
                },
            },
            required=["repo", "title"],
        ),
        side_effecting=True,
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        owner, name = args.repo(arguments)
        title = args.required_string(arguments, "title", max_chars=256)
        body = args.string(arguments, "body", max_chars=65_536, allow_empty=True)
        labels = args.strings(arguments, "labels", max_items=20)
        assignees = args.strings(arguments, "assignees", max_items=10)
        issue = await self._api.create_issue(
            owner, name, title=title, body=body, labels=labels, assignees=assignees
        )
        applied_labels = _label_names(issue)
        applied_assignees = [_login(a) for a in issue.get("assignees") or []]
        out: dict[str, Any] = {
            "created": True,
            "repo": f"{owner}/{name}",
            "number": issue.get("number"),
            "title": issue.get("title"),
            "state": issue.get("state"),
            "html_url": issue.get("html_url"),
            "labels": applied_labels,
            "assignees": applied_assignees,
        }
        dropped = [label for label in labels if label not in applied_labels] + [
            login for login in assignees if login not in applied_assignees
        ]
        if dropped:
            out["note"] = (
                f"GitHub did not apply {', '.join(dropped)} (the account may not label or "
                "assign issues in this repository)"
            )
        return out


class CommentIssue(GitHubTool):
    spec = ToolSpec(
        name="github__comment_issue",
        description=(
            "Add a comment to an issue or pull request. This posts it on GitHub for everyone "
            "to see; only do it when the user asked for it."
        ),
        parameters=args.object_schema(
            {
                "repo": args.REPO_PROPERTY,
                "number": {"type": "integer", "minimum": 1, "description": "The issue number."},
                "body": {"type": "string", "description": "The comment's text (Markdown)."},
            },
            required=["repo", "number", "body"],
        ),
        side_effecting=True,
    )

    async def run(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        owner, name = args.repo(arguments)
        number = args.integer(arguments, "number", default=None, low=1)
        body = args.required_string(arguments, "body", max_chars=65_536)
        comment = await self._api.create_comment(owner, name, number, body)
        return {
            "created": True,
            "repo": f"{owner}/{name}",
            "number": number,
            "comment_id": comment.get("id"),
            "html_url": comment.get("html_url"),
            "created_at": comment.get("created_at"),
        }


#: The tools of a GitHub connection, in the order they are declared to models.
TOOL_CLASSES: tuple[type[GitHubTool], ...] = (
    WhoAmI,
    ListRepos,
    SearchIssues,
    GetIssue,
    GetFile,
    CreateIssue,
    CommentIssue,
)
TOOL_SPECS: tuple[ToolSpec, ...] = tuple(cls.spec for cls in TOOL_CLASSES)
