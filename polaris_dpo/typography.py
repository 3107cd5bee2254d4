"""Spacing rules for assistant prose, and the fixer that repairs exactly what they find.

Rules (each finding is an `Issue` with the rule name, the offset and a short excerpt):

- `missing_space_after`: no space after `:` `,` `;` `?` `!` `.` before a word or a number
  (`Answer:123`, `is:$45.50`, `Temperature:-5`, `Answer:'yes'`, `one,two`, `Tōkyō,Japan`, `end.Next`,
  `42.Then`), Markdown bold included (`Answer:**42**`; `**Note:**This` gets its space after the `**`);
- `space_before`: a space before `,` `.` `:` (`word ,word`, `the end .`);
- `double_space`: two or more spaces between words, also right beside code or a URL (`see  `x``).

"A letter" is any Unicode letter of a script that spaces its words (not CJK, kana, Hangul, Thai).
Exceptions real text needs are not findings: code spans and fenced blocks, JSON objects and arrays
(nested ones too) and other one-line braces (`{a,b}`), calls and `key=value` runs in prose
(`print(a,b)`, `x=1,y=2`), URLs (any scheme, `mailto:`, scheme-less `example.com/path`,
`git@host:repo`), e-mail addresses, host:port, IPv6 and MAC addresses, LaTeX math (`$a:b$`, `\\(..\\)`),
times and ratios (`12:30`, `3:1`), decimals and thousands (`3.14`, `1,000`), version strings (`v1.2.3`,
`5.4.32.Final`), file names and dotted identifiers (`data.csv`, `os.path`, `photo1.Jpg`), abbreviations
(`e.g.`, `i.e.`, `U.S.`, `Mr.`, `No. 5`), ellipses (`...`, `. . .`), smileys, Markdown tables and
indentation. Plain Python, regular expressions only: it runs on every text answer the judge sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Spans no rule looks into, each with a substring that must occur for it to match at all (a cheap
# gate: most answers have no code, URL or e-mail). Overlapping spans are merged.
_PROTECTED = [(trigger, re.compile(pattern, flags)) for trigger, pattern, flags in [
    # fenced code block (unterminated: to the end), else inline code: one scan, so that a fence's
    # backticks never open an inline span
    ("`", r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL),
    ("~~~", r"~~~.*?(?:~~~|\Z)", re.DOTALL),
    ("://", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`]+", 0),        # URL with any scheme (https, ssh, s3)
    ("www.", r"\bwww\.[^\s<>\"'`]+", 0),                             # bare www URL
    ("/", r"\b(?:[\w-]+\.)+[A-Za-z]{2,}/[^\s<>\"'`]*", 0),           # URL without scheme: example.com/a?q=1,2
    (":", r"\b(?:mailto|tel|sms|urn|magnet|geo):[^\s<>\"'`)\]]+", 0),   # URI without //
    ("@", r"\b[\w.-]+@[\w-]+(?:\.[\w-]+)+:[\w./~-]+", 0),             # scp / git remote: git@host:org/repo.git
    ("data:", r"\bdata:[\w/+.-]+;[^\s<>\"'`)]+", 0),                # data: URI
    ("@", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0),                      # e-mail address
    ("{", r"\{[^{}\n]*\}", 0),                                      # one-line braces: JSON, dict, set {a,b}, {name}
    ("[", r"\[[^\[\]\n]*[\"'{][^\[\]\n]*\]", 0),                    # one-line JSON array of strings / objects
    (":", r"\b[\w-]+(?:\.[\w-]+)+:\d{2,5}\b|\blocalhost:\d+\b", 0),   # host:port
    (":", r"\b(?:[HhMmSs]{1,2}|[YyDd]{1,4})(?::(?:[HhMmSs]{1,2}|[YyDd]{1,4}))+\b", 0),  # time pattern HH:MM:SS
    ("&", r"&#?\w+;", 0),                                          # HTML entity
    # IPv6 or MAC address: fe80::1ff:fe23:4567:890a, 2001:db8::1, 00:1A:2B:3C:4D:5E (hex groups, a digit)
    (":", r"(?<![\w:])(?=[\w:]*\d)[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4}){2,7}(?:::)?(?![\w:])", 0),
    ("(", r"\b[A-Za-z_][\w.]*\((?:[^()\n]|\([^()\n]*\))*\)", 0),    # call in prose: print(a,b), f(x=1,y='C')
    ("=", r"\b\w+=[^\s,]*(?:,\w+=[^\s,]*)+", 0),                    # key=value run: x=1,y=2, dc=example,dc=com
    # versions and names with digits, which may go on with a capital: 1.2.3.Final, v1.2.Final, photo1.Jpg
    (".", r"\b[vV]?\d+(?:\.\d+){2,}(?:[.-]\w+)*|\b[A-Za-z_]\w*\d(?:\.\w+)+", 0),
    # LaTeX math: $$...$$, $a:b$ (not money: `$5 and $6`, `$5,$6`), \(...\), \[...\]
    ("$", r"\$\$.+?\$\$|(?<![\\$\w])\$(?=[^\s$])[^$\n]*?(?<=[^\s$\\])\$(?!\d)", re.DOTALL),
    ("\\", r"\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL),
    # qualified identifier in prose: the rand.Intn function, fmt.Println(
    (".", r"\b[a-z]\w*\.[A-Z]\w*(?=\(|\s+(?:function|method|class|type|struct|interface|constructor|property|call)s?\b)",
     0),
    ("=", r"(?m:^=.*$)", 0),                                        # spreadsheet formula line
    ("|", r"(?m:^ {0,3}\|.*$)", 0),                                 # Markdown table row
    ("", r"(?m:^(?: {4}|\t).*$)", 0),                              # indented code line
]]
_URL_TRAILING = ".,;:!?)]}'\""
_URL_TRIGGERS = ("://", "www.", "/", ":", "@")  # their spans give back sentence punctuation at the end


def _nested_json_spans(text: str) -> list[tuple[int, int]]:
    """Spans of one-line `{...}` objects with nested braces (the one-line pattern takes the flat ones):
    braces balanced outside strings, a `:` or a quote inside."""
    spans, start = [], text.find("{")
    while start >= 0:
        depth, quote, escaped, end = 0, None, False, None
        for i in range(start, len(text)):
            char = text[i]
            if char == "\n":
                break
            if quote:
                escaped, quote = (not escaped and char == "\\"), (None if char == quote and not escaped else quote)
            elif char in "\"'":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    end = i + 1
                    break
        body = text[start:end] if end else ""
        if end and body.count("{") > 1 and (":" in body or '"' in body):
            spans.append((start, end))
            start = text.find("{", end)
        else:
            start = text.find("{", start + 1)
    return spans

# A dot that ends no sentence: e.g. etc. vs. a.m. in any case (`E.g.` opens one), titles as written
# (`no.`, `st.`, `co.` end sentences), `No.` only before a number (`No. 5`, `no.5`).
_ABBREVIATION = re.compile(
    r"\b(?i:e\.g|i\.e|etc|vs|cf|a\.m|p\.m|approx)\."
    r"|\b(?:U\.S|U\.K|Ph\.D|Mr|Mrs|Ms|Dr|St|Jr|Sr|Inc|Ltd|Co|Fig)\."
    r"|\b[Nn]o\.(?=\s?\d)"
)

# A letter of a script that puts spaces between words: any Unicode letter (`é`, `ō`, `ß`), not CJK,
# kana, Hangul or Thai, which run without spaces (`你好,世界` is no error).
_NO_SPACE_SCRIPTS = r"\u0e00-\u0e7f\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_L = rf"[^\W\d_{_NO_SPACE_SCRIPTS}]"
_LOWER = rf"[^\W\d_A-Z{_NO_SPACE_SCRIPTS}]"  # such a letter, not an ASCII capital (`U.S.A`, `ASP.NET`)
_NUMBER = r"[-+−]?[$€£¥₹]?\d"  # a number, signed or with a currency: 5, -5, $45.50, €30

_MISSING_AFTER = re.compile(
    rf"(?<={_L}|[%)\]\"'])[:;](?={_L}|{_NUMBER})"           # Answer:123, note;see, is:$45, is:-5 (not 12:30, C:\)
    rf"|(?<={_L}):(?=[\"“'‘«\[(](?:{_L}|\d))"                # content:"Hi, Answer:'yes', is:[image] (not "k":"v")
    rf"|(?<={_L}):\*\*(?=\w)"                                 # Answer:**42**, **Note:**This (see _closes_bold)
    rf"|(?<=\w\*\*):(?={_L}|{_NUMBER})"                       # **Note**:This
    rf"|(?<={_L}|[%)\]\"']),(?={_L})"                        # one,two, Tōkyō,Japan (not 1,000)
    rf"|(?<={_L}|[)\]]),(?=\d)"                               # items,3
    rf"|(?<=\d),(?={_L})"                                     # 1,2,and
    rf"|(?<={_L}|[)\]\"'])[?!](?={_L}|\d)(?![\w-]*=)"         # Hello!How (not ?q=1, !=)
    rf"|(?<={_L}{_LOWER})\.(?=[A-Z](?:[a-z]+\b(?![.(])|\b))"  # end.Next, café.The (not U.S.A, ASP.NET, os.Path()
    r"|(?<=\d)\.(?=[A-Z][a-z]+\b(?![.(]))"                    # 42.Then, $5.99.Next: no decimal goes on with a capital
    r"|(?<=[a-z])\.(?=\d+\s+[A-Za-z])(?<!\bv\.)"              # costs.5 apples (not v1.2, 3.14)
)
_SPACE_BEFORE = re.compile(
    r"(?<=[\w)\]\"'%]) +(?=,)"                             # word ,word
    r"|(?<=[\w)\]\"'%]) +(?=\.(?:\s|$))(?!\.\s\.)"         # the end . (not .NET, .5, ..., a spaced ellipsis . . .)
    r"|(?<=[\w)\]\"'%]) +(?=:(?:\s|$))"                    # Answer : 123 (not :) or :30)
)
_DOUBLE_SPACE = re.compile(r"(?<=\S) {2,}(?=\S)")

RULES = ("missing_space_after", "space_before", "double_space")
# Each rule is tried only where a cheap pattern finds a candidate (a mark before a non-space, a run of
# spaces): matching the full pattern, lookbehinds included, at every position is what costs.
_RULES = [
    ("missing_space_after", re.compile(r"[:;,?!.](?=\S)"), _MISSING_AFTER),
    ("space_before", re.compile(r"(?<=\S) +(?=[,.:])"), _SPACE_BEFORE),
    ("double_space", re.compile(r"(?<=\S) {2,}(?=\S)"), _DOUBLE_SPACE),
]


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
    for trigger, pattern in _PROTECTED:
        if trigger and trigger not in text:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            token = match.group()
            if trigger in _URL_TRIGGERS:
                end -= len(token) - len(token.rstrip(_URL_TRAILING))
            spans.append((start, end))
    if "{" in text:
        spans += _nested_json_spans(text)
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
    """Whether [start, end) overlaps a protected span (spaces just before or after one do not: `see  `x``)."""
    for span_start, span_end in spans:
        if span_start >= end:
            return False
        if start < span_end:
            return True
    return False


def _closes_bold(text: str, colon: int) -> bool:
    """Whether the `**` after the colon at `colon` closes bold (`**Note:**This`: the space goes after it)
    rather than opens it (`Answer:**42**`): an odd number of `**` before it on its line."""
    line_start = text.rfind("\n", 0, colon) + 1
    return text.count("**", line_start, colon) % 2 == 1


def _excerpt(text: str, start: int, end: int) -> str:
    return text[max(0, start - 12):end + 12].replace("\n", " ")


_FAST_PATH = re.compile(r"[:;,?!.]\S| [,.:]|\S  ")


def find_issues(text: str) -> list[Issue]:
    """Every spacing error in `text`, in order of position; empty for text a careful editor accepts."""
    if not text or not _FAST_PATH.search(text):
        return []
    spans = None
    issues = []
    for rule, candidates, pattern in _RULES:
        for candidate in candidates.finditer(text):
            match = pattern.match(text, candidate.start())
            if match is None:
                continue
            if spans is None:
                spans = protected_spans(text)
            start, end = match.span()
            if rule == "missing_space_after" and not (end == start + 3 and _closes_bold(text, start)):
                end = start + 1  # the space goes right after the mark
            if _inside(spans, start, start + 1 if rule == "missing_space_after" else end):
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


def fix_spacing(text: str, issues: list[Issue] | None = None) -> str:
    """`text` with every spacing error repaired and nothing else changed (a no-op on text without issues).

    `issues`: `find_issues(text)` when the caller has it already.
    """
    issues = find_issues(text) if issues is None else issues
    for _ in range(8):
        if not issues:
            return text
        text = _apply(text, issues)
        issues = find_issues(text)
    return text
