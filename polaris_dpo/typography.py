"""Spacing rules for assistant prose, and the fixer that repairs exactly what they find.

Rules (each finding is an `Issue` with the rule name, the offset and a short excerpt):

- `missing_space_after`: no space after `:` `,` `;` `?` `!` `.` before a word or a number
  (`Answer:123`, `one,two`, `end.Next`);
- `space_before`: a space before `,` `.` `:` (`word ,word`, `the end .`);
- `double_space`: two or more spaces between words.

Exceptions real text needs are not findings: code spans and fenced blocks, JSON objects and arrays,
URLs, e-mail addresses, host:port, times and ratios (`12:30`, `3:1`), decimals and thousands
(`3.14`, `1,000`), version strings (`v1.2.3`), file names and dotted identifiers (`data.csv`,
`os.path`), abbreviations (`e.g.`, `i.e.`, `U.S.`), ellipses, smileys, Markdown tables and
indentation. Plain Python, regular expressions only: it runs on every text answer the judge sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Spans no rule looks into. Order does not matter: overlapping spans are merged.
_PROTECTED = re.compile(
    r"```.*?(?:```|\Z)"                                   # fenced code block (unterminated: to the end)
    r"|~~~.*?(?:~~~|\Z)"
    r"|`[^`\n]+`"                                         # inline code
    r"|\b(?:https?|ftp|file)://[^\s<>\"'`]+"             # URL with scheme
    r"|\bwww\.[^\s<>\"'`]+"                               # bare www URL
    r"|\bdata:[\w/+.-]+;[^\s<>\"'`)]+"                     # data: URI
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                      # e-mail address
    r"|\{[^{}\n]*[\"':][^{}\n]*\}"                        # one-line JSON / dict literal
    r"|\[[^\[\]\n]*[\"'{][^\[\]\n]*\]"                    # one-line JSON array of strings / objects
    r"|\b[\w-]+(?:\.[\w-]+)+:\d{2,5}\b"                   # host:port
    r"|\blocalhost:\d+\b"
    r"|&#?\w+;"                                           # HTML entity
    r"|\b[a-z]\w*\.[A-Z]\w*(?=\(|\s+(?:function|method|class|type|struct|interface|constructor|property|call)s?\b)"
    #                                                      ^ qualified identifier: rand.Intn function, fmt.Println(
    r"|(?m:^=.*$)"                                        # spreadsheet formula line
    r"|(?m:^ {0,3}\|.*$)"                                 # Markdown table row
    r"|(?m:^(?: {4}|\t).*$)",                             # indented code line
    re.DOTALL,
)
_URL_TRAILING = ".,;:!?)]}'\""

_ABBREVIATION = re.compile(
    r"\b(?:e\.g|i\.e|etc|vs|cf|a\.m|p\.m|U\.S|U\.K|Ph\.D|No|Mr|Mrs|Ms|Dr|St|Jr|Sr|Inc|Ltd|Co|Fig|approx)\.",
    re.IGNORECASE,
)

_MISSING_AFTER = re.compile(
    r"(?<=[A-Za-z%)\]\"'])[:;](?=[A-Za-z0-9])"           # Answer:123, note;see (not 12:30, not C:\)
    r"|(?<=[A-Za-z]):(?=[\"“\[(][A-Za-z0-9])"             # content:"Discuss, is:[image] (not "key":"value")
    r"|(?<=[A-Za-z%)\]\"']),(?=[A-Za-z])"                  # one,two (not 1,000)
    r"|(?<=[A-Za-z)\]]),(?=\d)"                            # items,3
    r"|(?<=\d),(?=[A-Za-z])"                               # 1,2,and
    r"|(?<=[A-Za-z)\]\"'])[?!](?=[A-Za-z0-9])(?![\w-]*=)"  # Hello!How (not ?q=1, !=)
    r"|(?<=[A-Za-z][a-z])\.(?=[A-Z](?:[a-z]+\b(?![.(])|\b))"   # end.Next (not U.S.A, ASP.NET, os.Path(
    r"|(?<=[a-z])\.(?=\d+\s+[A-Za-z])(?<!\bv\.)"           # costs.5 apples (not v1.2, 3.14)
)
_SPACE_BEFORE = re.compile(
    r"(?<=[\w)\]\"'%]) +(?=,)"                             # word ,word
    r"|(?<=[\w)\]\"'%]) +(?=\.(?:\s|$))"                   # the end . (not .NET, .5, ...)
    r"|(?<=[\w)\]\"'%]) +(?=:(?:\s|$))"                    # Answer : 123 (not :) or :30)
)
_DOUBLE_SPACE = re.compile(r"(?<=\S) {2,}(?=\S)")

RULES = ("missing_space_after", "space_before", "double_space")


@dataclass(frozen=True)
class Issue:
    rule: str  # one of RULES
    start: int  # offset of the offending character(s)
    end: int
    excerpt: str  # the text around it, for reports

    def describe(self) -> str:
        return f"{self.rule} at {self.start}: {self.excerpt!r}"


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) spans of code, JSON, URLs, e-mails and other text the rules skip."""
    spans = []
    for match in _PROTECTED.finditer(text):
        start, end = match.span()
        token = match.group()
        if "://" in token[:8] or token.startswith("www."):
            end -= len(token) - len(token.rstrip(_URL_TRAILING))
        spans.append((start, end))
    for match in _ABBREVIATION.finditer(text):
        spans.append(match.span())
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end] meets a protected span (end inclusive: a space just before a span counts)."""
    for span_start, span_end in spans:
        if span_start > end:
            return False
        if start < span_end and end >= span_start:
            return True
    return False


def _excerpt(text: str, start: int, end: int) -> str:
    return text[max(0, start - 12):end + 12].replace("\n", " ")


_FAST_PATH = re.compile(r"[:;,?!.]\S| [,.:]|\S  ")


def find_issues(text: str) -> list[Issue]:
    """Every spacing error in `text`, in order of position; empty for text a careful editor accepts."""
    if not text or not _FAST_PATH.search(text):
        return []
    spans = None
    issues = []
    for rule, pattern in (("missing_space_after", _MISSING_AFTER), ("space_before", _SPACE_BEFORE),
                          ("double_space", _DOUBLE_SPACE)):
        for match in pattern.finditer(text):
            if spans is None:
                spans = protected_spans(text)
            start, end = match.span()
            if rule == "missing_space_after":
                end = start + 1
                if _inside(spans, start, start):
                    continue
            elif _inside(spans, start, end):
                continue
            issues.append(Issue(rule, start, end, _excerpt(text, start, end)))
    issues.sort(key=lambda issue: issue.start)
    return issues


def _apply(text: str, issues: list[Issue]) -> str:
    pieces = []
    cursor = 0
    for issue in issues:
        if issue.start < cursor:
            continue  # two rules on the same spot: the first repair wins, the next pass re-checks
        pieces.append(text[cursor:issue.start])
        if issue.rule == "missing_space_after":
            pieces.append(text[issue.start:issue.end] + " ")
        elif issue.rule == "double_space":
            pieces.append(" ")
        # space_before: the spaces are dropped
        cursor = issue.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def fix_spacing(text: str) -> str:
    """`text` with every spacing error repaired and nothing else changed (a no-op on text without issues)."""
    for _ in range(8):
        issues = find_issues(text)
        if not issues:
            return text
        text = _apply(text, issues)
    return text
