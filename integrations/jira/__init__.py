"""Jira: the REST client (transport with retries, issue/comment/label operations), issues as
requests, the write-back of a verdict, comment formats, and webhook payloads.

The names below are the package's API (``from scopeguard.integrations import jira``)."""

from .client import ISSUE_FIELDS, JiraClient, make_jira
from .errors import (
    JiraAnswerError,
    JiraAuthError,
    JiraConfigError,
    JiraError,
    JiraNotFoundError,
    JiraPermissionError,
    JiraRequestError,
    JiraUnavailableError,
)
from .issues import fetch_issues, issue_to_request
from .transport import RetryPolicy, Transport, whole_request_adapter
from .writeback import WriteBack, find_comment, jira_label, write_back

__all__ = [
    "ISSUE_FIELDS",
    "JiraAnswerError",
    "JiraAuthError",
    "JiraClient",
    "JiraConfigError",
    "JiraError",
    "JiraNotFoundError",
    "JiraPermissionError",
    "JiraRequestError",
    "JiraUnavailableError",
    "RetryPolicy",
    "Transport",
    "WriteBack",
    "fetch_issues",
    "find_comment",
    "issue_to_request",
    "jira_label",
    "make_jira",
    "whole_request_adapter",
    "write_back",
]
