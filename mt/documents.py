"""A document and the segments a model translates: split a text or an HTML page into
sentences, translate those, join the translations back into the same layout.

A :class:`Document` is a list of *parts*: literal strings, kept byte-for-byte (line breaks,
blank lines, the whitespace around sentences, every HTML tag, comment and script), and
:class:`Segment`\\ s, the sentences to translate. ``"".join`` of the parts with each segment
replaced by its source text gives the input back exactly; :meth:`Document.join` replaces each
segment by its translation instead. See ``docs/documents.md`` for the rules and their limits.

* **Plain text** (:func:`split_text`): a line break always ends a segment, so the output has
  the input's lines; each line is split into sentences (sentencex, with two language-neutral
  repairs, :func:`sentence_spans`).
* **HTML** (:func:`split_html`): the stdlib tokenizer (:mod:`html.parser`) reports where each
  tag starts, so tags are copied from the input, never re-serialised. Block tags (``p``,
  ``div``, ``li``, ``br``, ``td`` ...) end segments; the text between *inline* tags (``b``,
  ``a``, ``span`` ...) is one run, split into sentences, and the inline tags inside a sentence
  are put back into its translation at the proportional word position
  (:func:`place_tags`). ``script``/``style``/``code`` and ``translate="no"`` elements are kept
  untranslated.
* **Long sentences**: with ``count`` (text → tokens) and ``max_tokens``, a sentence over the
  limit is cut at clause punctuation, else between words, else (one huge "word") between
  characters, so each piece fits (:func:`cut_span`).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Callable, Iterator, Literal, Optional, Sequence, Union

from mt.errors import UserError

Count = Callable[[str], int]
"""``count(text) -> tokens``: how long a piece is for the model (normalised + subwords)."""
Format = Literal["text", "html"]
Span = tuple[int, int]
MAX_DEPTH = 256  # open HTML elements at once; deeper nesting is refused (DocumentError)


class DocumentError(UserError, ValueError):
    """A document that cannot be split: HTML that does not parse or nests too deeply."""


# ---------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Tag:
    """Inline markup inside a segment: ``raw`` as written in the input, at offset ``at`` of
    the segment's text; ``kind`` open, close or void (``<img>``, a comment, a kept element)."""

    at: int
    raw: str
    kind: Literal["open", "close", "void"]
    name: str = ""


@dataclass(frozen=True)
class Segment:
    """One piece for the model: plain ``text`` (HTML entities decoded) and its inline tags."""

    text: str
    tags: tuple[Tag, ...] = ()


@dataclass
class Document:
    """Literal strings and segments, in order. ``markup``: an HTML document, whose
    translations are escaped and get their segment's inline tags back."""

    parts: list[Union[str, Segment]]
    markup: bool = False

    @property
    def segments(self) -> list[str]:
        """The texts to translate, in document order."""
        return [p.text for p in self.parts if isinstance(p, Segment)]

    def join(self, translations: Sequence[str]) -> str:
        """The document with each segment replaced by its translation (same order as
        :attr:`segments`)."""
        n = sum(isinstance(p, Segment) for p in self.parts)
        if len(translations) != n:
            raise ValueError(f"join: {len(translations)} translations for {n} segments")
        out, it = [], iter(translations)
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(render(part, next(it)) if self.markup else next(it))
        return "".join(out)


def join_all(docs: Sequence[Document], translations: Sequence[str]) -> list[str]:
    """Each of ``docs`` joined with its share of ``translations`` (all their segments, in
    order: what one batched translation of ``[s for d in docs for s in d.segments]`` gives)."""
    out, pos = [], 0
    for doc in docs:
        n = len(doc.segments)
        out.append(doc.join(translations[pos:pos + n]))
        pos += n
    if pos != len(translations):
        raise ValueError(f"join_all: {len(translations)} translations for {pos} segments")
    return out


def split(doc: str, fmt: Format = "text", lang: Optional[str] = None, count: Optional[Count] = None,
          max_tokens: Optional[int] = None, sentences: bool = True) -> Document:
    """:func:`split_text` or :func:`split_html`, by ``fmt``."""
    if fmt == "html":
        return split_html(doc, lang, count, max_tokens, sentences)
    if fmt == "text":
        return split_text(doc, lang, count, max_tokens, sentences)
    raise ValueError(f"format: expected 'text' or 'html', got {fmt!r}")


# ---------------------------------------------------------------------------- sentences


def _language(lang: Optional[str]) -> str:
    """sentencex's code for ``lang``: the primary subtag (``de-AT`` → ``de``). Codes it has no
    rules for fall back (inside the library) to its English rules; None means English too."""
    return re.split(r"[-_]", lang.strip().lower())[0] if lang and lang.strip() else "en"


# A break the library made that no sentence starts like: the next piece begins in lower case
# or with joining punctuation (fr "c.-à-d. presque", cs "3. října"), or the piece before ends
# in a one-letter abbreviation (fr "M. Dupont", initials).
_LETTER = re.compile(r"[^\W\d_]")
_JOINING = re.compile(r"[-–](?=\S)|[,;:]")
_INITIAL = re.compile(r"(?:^|[\s(«„“])[^\W\d_]\.$")


def _false_break(before: str, after: str) -> bool:
    """Whether the library's break between ``before`` and ``after`` is not a sentence end."""
    after = after.lstrip()
    if _JOINING.match(after) or (after[:1].islower() and _LETTER.match(after)):
        return True
    return _INITIAL.search(before.rstrip()) is not None


def _library_pieces(text: str, lang: Optional[str]) -> list[str]:
    import sentencex  # a compiled extension: imported on first use, not with mt

    return list(sentencex.segment(_language(lang), text))


def sentence_spans(text: str, lang: Optional[str] = None) -> list[Span]:
    """``(start, end)`` of each sentence of ``text``, without the whitespace around it; the
    text between two spans is whitespace. ``lang``: an ISO 639 code (see :func:`_language`)."""
    pieces = _library_pieces(text, lang)
    if "".join(pieces) != text:  # the library changed the text: keep it whole
        pieces = [text]
    merged: list[str] = []
    for piece in pieces:
        if merged and piece.strip() and merged[-1].strip() and _false_break(merged[-1], piece):
            merged[-1] += piece
        else:
            merged.append(piece)
    spans, pos = [], 0
    for piece in merged:
        span = _strip(text, pos, pos + len(piece))
        if span is not None:
            spans.append(span)
        pos += len(piece)
    return spans


def _strip(text: str, start: int, end: int) -> Optional[Span]:
    """``text[start:end]`` without surrounding whitespace, as a span; None if blank."""
    piece = text[start:end]
    inner = piece.strip()
    if not inner:
        return None
    start += len(piece) - len(piece.lstrip())
    return start, start + len(inner)


# ---------------------------------------------------------------------------- long sentences

# a clause ends after , ; : closing brackets/quotes or a dash, before whitespace
_CLAUSE_END = re.compile(r"[,;:)\]}»”\"'–—…](?=\s)")
_WORD_END = re.compile(r"\S(?=\s)")


def cut_span(text: str, start: int, end: int, count: Count, max_tokens: int) -> list[Span]:
    """Split ``text[start:end]`` (a sentence) into pieces of at most ``max_tokens`` by
    ``count``: each cut at the last clause punctuation that fits, else the last word end
    that fits, else between characters (a "word" over the limit alone). A piece is always at
    least one character, so a limit below one character's tokens is exceeded, not looped on."""
    pieces: list[Span] = []
    span = _strip(text, start, end)
    while span is not None:
        s, e = span
        if count(text[s:e]) <= max_tokens:
            pieces.append(span)
            break
        cut = _best_cut(text, s, e, count, max_tokens)
        pieces.append(_strip(text, s, cut) or (s, cut))
        span = _strip(text, cut, e)
    return pieces


def _best_cut(text: str, start: int, end: int, count: Count, max_tokens: int) -> int:
    """End of the longest fitting prefix of ``text[start:end]`` among clause ends, then word
    ends, then characters (``start + 1`` if not even one character fits)."""
    clause = [m.end() for m in _CLAUSE_END.finditer(text, start, end)]
    words = [m.end() for m in _WORD_END.finditer(text, start, end)]
    for points in (clause, words, range(start + 1, end)):
        cut = _last_fitting(points, text, start, count, max_tokens)
        if cut is not None:
            return cut
    return start + 1


def _last_fitting(points: Sequence[int], text: str, start: int, count: Count, max_tokens: int) -> Optional[int]:
    """The largest of the ascending ``points`` with ``count(text[start:point]) <= max_tokens``,
    by bisection (a longer prefix has at least as many tokens, near enough: every answer is
    checked)."""
    lo, hi, best = 0, len(points) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if count(text[start:points[mid]].rstrip()) <= max_tokens:
            best, lo = points[mid], mid + 1
        else:
            hi = mid - 1
    return best


def segment_spans(text: str, lang: Optional[str] = None, count: Optional[Count] = None,
                  max_tokens: Optional[int] = None, sentences: bool = True) -> list[Span]:
    """The segments of a block of text: its sentences (or the whole block when not
    ``sentences``), each cut to ``max_tokens`` when ``count`` is given."""
    spans = sentence_spans(text, lang) if sentences else [s for s in [_strip(text, 0, len(text))] if s]
    if count is None or max_tokens is None:
        return spans
    return [piece for s, e in spans for piece in cut_span(text, s, e, count, max_tokens)]


# ---------------------------------------------------------------------------- plain text


def split_text(text: str, lang: Optional[str] = None, count: Optional[Count] = None,
               max_tokens: Optional[int] = None, sentences: bool = True) -> Document:
    """A plain-text document: every line (``"\\n"`` ends one) split into sentences; line
    breaks, blank lines and the whitespace around sentences are kept as they are."""
    parts: list[Union[str, Segment]] = []
    for i, line in enumerate(text.split("\n")):
        if i:
            _add_literal(parts, "\n")
        pos = 0
        for s, e in segment_spans(line, lang, count, max_tokens, sentences):
            _add_literal(parts, line[pos:s])
            parts.append(Segment(line[s:e]))
            pos = e
        _add_literal(parts, line[pos:])
    return Document(parts)


def _add_literal(parts: list[Union[str, Segment]], text: str) -> None:
    """Append ``text`` to ``parts``, merged into a literal before it."""
    if not text:
        return
    if parts and isinstance(parts[-1], str):
        parts[-1] += text
    else:
        parts.append(text)


# ---------------------------------------------------------------------------- HTML: tokens

# inline elements: their tags stay inside the sentence they are in
INLINE = frozenset("a abbr acronym b bdi bdo big cite data del dfn em font i img ins label mark nobr q s small "
                   "span strike strong sub sup time tt u wbr".split())
# void elements: no end tag, never on the stack
VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
# kept untranslated with everything inside: scripts, code, raw text; those of KEEP_INLINE sit
# inside a sentence (as a void tag would), the others end segments
KEEP_INLINE = frozenset("script style template code kbd samp var".split())
KEEP = KEEP_INLINE | frozenset("pre textarea svg math".split())
# a start tag of these closes an open one of the same group (<li>a<li>b), as browsers do
SIBLINGS = {"p": {"p"}, "li": {"li"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"}, "tr": {"tr"},
            "td": {"td", "th"}, "th": {"td", "th"}, "option": {"option"}}


@dataclass
class _Event:
    """What the tokenizer reported at offset ``at`` of the input."""

    at: int
    kind: str  # start, startend, end, text, comment, decl
    name: str = ""
    attrs: tuple = ()
    data: Optional[str] = None  # a text event's characters as given (entities separate)


class _Scanner(HTMLParser):
    """:class:`html.parser.HTMLParser` recording each token's kind and start offset; the raw
    token is the input from its start to the next token's (so nothing is re-serialised)."""

    def __init__(self, src: str) -> None:
        super().__init__(convert_charrefs=False)  # entities come as their own tokens
        self.events: list[_Event] = []
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", src)]

    def _add(self, kind: str, name: str = "", attrs: tuple = (), data: Optional[str] = None) -> None:
        line, col = self.getpos()
        self.events.append(_Event(self._line_starts[line - 1] + col, kind, name, attrs, data))

    def handle_starttag(self, tag, attrs):  # noqa: D102 - HTMLParser's callbacks
        self._add("start", tag, tuple(attrs))

    def handle_startendtag(self, tag, attrs):  # noqa: D102
        self._add("startend", tag, tuple(attrs))

    def handle_endtag(self, tag):  # noqa: D102
        self._add("end", tag)

    def handle_data(self, data):  # noqa: D102
        self._add("text", data=data)

    def handle_entityref(self, name):  # noqa: D102
        self._add("text")

    def handle_charref(self, name):  # noqa: D102
        self._add("text")

    def handle_comment(self, data):  # noqa: D102
        self._add("comment")

    def handle_decl(self, decl):  # noqa: D102
        self._add("decl")

    def handle_pi(self, data):  # noqa: D102
        self._add("decl")

    def unknown_decl(self, data):  # noqa: D102
        self._add("decl")


def _where(src: str, at: int) -> str:
    """``line L, column C`` (1-based) of offset ``at``."""
    line, line_start = src.count("\n", 0, at) + 1, src.rfind("\n", 0, at) + 1
    return f"line {line}, column {at - line_start + 1}"


def _tokens(src: str) -> Iterator[tuple[_Event, str]]:
    """``(event, raw)`` for every token of ``src``; the raws concatenate to ``src``. Markup
    the tokenizer could not read (an unclosed tag or comment it passed on as text) raises
    :class:`DocumentError`."""
    scanner = _Scanner(src)
    try:
        scanner.feed(src)
        scanner.close()
    except Exception as e:  # the tokenizer's own checks (e.g. AssertionError on "<![ x")
        line, col = scanner.getpos()
        raise DocumentError(f"html: cannot parse at line {line}, column {col + 1}: {e}") from None
    events = scanner.events
    if scanner.rawdata:  # left unread (not seen with the stdlib so far; other versions differ)
        raise DocumentError(f"html: cannot parse from {_where(src, len(src) - len(scanner.rawdata))}")
    cdata = None  # inside script/style the tokenizer passes everything on as text
    for k, ev in enumerate(events):
        raw = src[ev.at:events[k + 1].at if k + 1 < len(events) else len(src)]
        if ev.kind == "text" and cdata is None and re.match(r"<[A-Za-z/!?]", src[ev.at:ev.at + 2]):
            snippet = src[ev.at:ev.at + 40]
            raise DocumentError(f"html: malformed or unclosed markup at {_where(src, ev.at)}: {snippet!r}")
        if ev.kind == "start" and ev.name in ("script", "style"):
            cdata = ev.name
        elif ev.kind == "end" and ev.name == cdata:
            cdata = None
        own = _own_length(ev, raw)
        yield ev, raw[:own]
        if own < len(raw):  # characters the tokenizer skipped without a token: they are text
            yield _Event(ev.at + own, "text", data=raw[own:]), raw[own:]


def _own_length(ev: _Event, raw: str) -> int:
    """How much of ``raw`` (the input up to the next token) is ``ev``'s own: the tokenizer
    drops an incomplete ``&x`` at the very end without a token (CPython 3.11)."""
    if ev.kind == "text":
        if ev.data is not None:
            return len(ev.data)
        return re.match(r"&#?\w*;?", raw).end()  # type: ignore[union-attr]
    end = raw.rfind(">") + 1
    return end or len(raw)


# ---------------------------------------------------------------------------- HTML: atoms

Atom = tuple[str, str, str]
"""``(kind, raw, name)``: kind text, open, close, void (inline) or break (ends segments)."""


def _kept(ev: _Event) -> bool:
    """Whether the element of start tag ``ev`` stays untranslated, content and all."""
    attrs = {k: (v or "") for k, v in ev.attrs}
    return (ev.name in KEEP or attrs.get("translate", "").lower() == "no"
            or "notranslate" in attrs.get("class", "").split())


def _atoms(src: str, max_depth: int) -> Iterator[Atom]:
    """The document as atoms: text, inline tags, and literals that end segments. A kept
    element (:func:`_kept`) comes as one atom with everything inside it."""
    stack: list[str] = []
    keeping: Optional[_Keeping] = None
    for ev, raw in _tokens(src):
        if keeping is not None and ev.kind == "start" and len(stack) == keeping.depth + 1 \
                and stack[-1] in SIBLINGS.get(ev.name, ()):
            yield keeping.atom()  # <p translate="no">a<p>b: the second <p> closes the first
            keeping = None
        _track(stack, ev, src, max_depth)
        if keeping is not None:
            keeping.raw.append(raw)
            if len(stack) <= keeping.depth:  # its end tag (or an ancestor's) closed it
                yield keeping.atom()
                keeping = None
        elif ev.kind == "start" and ev.name not in VOID and _kept(ev):
            keeping = _Keeping(len(stack) - 1, [raw], ev.name in INLINE or ev.name in KEEP_INLINE)
        else:
            yield _atom(ev, raw)
    if keeping is not None:  # a kept element left open at the end
        yield keeping.atom()


@dataclass
class _Keeping:
    """A kept element being collected: the stack depth outside it, its raw input so far."""

    depth: int
    raw: list[str]
    inline: bool

    def atom(self) -> Atom:
        return ("void" if self.inline else "break", "".join(self.raw), "")


def _track(stack: list[str], ev: _Event, src: str, max_depth: int) -> None:
    """Keep ``stack`` (the open elements) up to date; refuse nesting deeper than ``max_depth``."""
    if ev.kind == "start" and ev.name not in VOID:
        if stack and stack[-1] in SIBLINGS.get(ev.name, ()):
            stack.pop()
        if len(stack) >= max_depth:
            raise DocumentError(f"html: elements nested deeper than {max_depth} at {_where(src, ev.at)}")
        stack.append(ev.name)
    elif ev.kind == "end" and ev.name in stack:  # a stray end tag changes nothing
        while stack.pop() != ev.name:
            pass


def _atom(ev: _Event, raw: str) -> Atom:
    """One token's atom (outside kept elements)."""
    if ev.kind == "text":
        return ("text", raw, "")
    if ev.kind == "comment":
        return ("void", raw, "")
    if ev.kind in ("start", "startend", "end") and ev.name in INLINE:
        if ev.kind == "end":
            return ("close", raw, ev.name)
        return ("void" if ev.kind == "startend" or ev.name in VOID else "open", raw, ev.name)
    return ("break", raw, ev.name)


# ---------------------------------------------------------------------------- HTML: segments


class _Run:
    """Text between two segment-ending atoms: its plain text, the raw input behind each
    plain character, and the inline tags at their plain offsets."""

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.raw: list[str] = []  # per plain character: its input ("&amp;" for "&"), "" after an entity's first
        self.tags: list[Tag] = []

    def add(self, kind: str, raw: str, name: str) -> None:
        if kind != "text":
            self.tags.append(Tag(len(self.plain), raw, kind, name))  # type: ignore[arg-type]
            return
        text = html.unescape(raw)
        self.plain.extend(text)
        self.raw.extend(text if text == raw else [raw] + [""] * (len(text) - 1))

    def parts(self, spans: list[Span]) -> list[Union[str, Segment]]:
        """The run as literals and segments: a tag strictly inside a span goes with its
        segment, one at a span's edge stays in the literal between segments."""
        plain, parts = "".join(self.plain), []
        tags, t, pos = self.tags, 0, 0
        for s, e in spans + [(len(plain), len(plain))]:
            gap = []
            for o in range(pos, s + 1):
                while t < len(tags) and tags[t].at == o:
                    gap.append(tags[t].raw)
                    t += 1
                if o < s:
                    gap.append(self.raw[o])
            parts.append("".join(gap))
            if s < e:
                inside = []
                while t < len(tags) and tags[t].at < e:
                    inside.append(Tag(tags[t].at - s, tags[t].raw, tags[t].kind, tags[t].name))
                    t += 1
                parts.append(Segment(plain[s:e], tuple(inside)))
            pos = e
        return parts


def split_html(src: str, lang: Optional[str] = None, count: Optional[Count] = None,
               max_tokens: Optional[int] = None, sentences: bool = True, max_depth: int = MAX_DEPTH) -> Document:
    """An HTML document or fragment: the text between block tags split into sentences, with
    the inline tags inside a sentence carried into its translation. Raises
    :class:`DocumentError` for markup the tokenizer cannot read or nesting deeper than
    ``max_depth``."""
    parts: list[Union[str, Segment]] = []
    run = _Run()

    def flush() -> None:
        nonlocal run
        plain = "".join(run.plain)
        spans = segment_spans(plain, lang, count, max_tokens, sentences) if plain.strip() else []
        for part in run.parts(spans):
            if isinstance(part, str):
                _add_literal(parts, part)
            else:
                parts.append(part)
        run = _Run()

    for kind, raw, name in _atoms(src, max_depth):
        if kind == "break":
            flush()
            _add_literal(parts, raw)
        else:
            run.add(kind, raw, name)
    flush()
    return Document(parts, markup=True)


# ---------------------------------------------------------------------------- HTML: tags back

_WORD = re.compile(r"\S+")


def render(segment: Segment, translation: str) -> str:
    """``translation`` escaped for HTML, with ``segment``'s inline tags put back in order."""
    if not segment.tags:
        return html.escape(translation, quote=False)
    out, prev = [], 0
    for tag, pos in zip(segment.tags, place_tags(segment.text, segment.tags, translation)):
        out.append(html.escape(translation[prev:pos], quote=False))
        out.append(tag.raw)
        if tag.kind == "void" and _between_words(segment.text, tag.at) and translation[pos:pos + 1].strip():
            out.append(" ")  # "run <code>x</code> now": the space the model's text has only once
        prev = pos
    out.append(html.escape(translation[prev:], quote=False))
    return "".join(out)


def _between_words(text: str, at: int) -> bool:
    """Whether offset ``at`` of ``text`` has whitespace on both sides."""
    return 0 < at < len(text) and text[at - 1].isspace() and text[at].isspace()


def place_tags(source: str, tags: Sequence[Tag], target: str) -> list[int]:
    """Where each of ``tags`` (offsets in ``source``) goes in ``target``: at the same
    proportional word position, rounded to a word boundary (never inside a word); an opening
    tag before its word, a closing one after its word. The positions keep the tags' order,
    so nesting is kept; a pair that enclosed words keeps at least one."""
    src_words = [m.span() for m in _WORD.finditer(source)]
    tgt_words = [m.span() for m in _WORD.finditer(target)]
    n, m = max(1, len(src_words)), len(tgt_words)
    pos = []
    for tag in tags:
        j = min(max(int(_word_position(src_words, tag.at) / n * m + 0.5), 0), m)
        pos.append(_target_offset(target, tgt_words, j, tag.kind, _punctuation_outside(source, src_words, tag)))
    _widen_collapsed_pairs(source, tags, pos, tgt_words, len(target))
    for i in range(1, len(pos)):
        pos[i] = max(pos[i], pos[i - 1])
    return pos


def _word_position(words: list[Span], at: int) -> float:
    """Words before offset ``at``, with the fraction of a word ``at`` is inside."""
    done = 0.0
    for s, e in words:
        if e <= at:
            done += 1
        elif s < at:
            done += (at - s) / (e - s)
    return done


def _punctuation_outside(source: str, words: list[Span], tag: Tag) -> bool:
    """Whether ``tag`` sits inside a word with only punctuation between it and the word's
    edge: a link before a full stop (``<a>hier</a>.``), bold after a quote (``„<b>Hallo``)."""
    for s, e in words:
        if s < tag.at < e:
            rest = source[tag.at:e] if tag.kind == "close" else source[s:tag.at]
            return _PUNCT.fullmatch(rest) is not None
    return False


_PUNCT = re.compile(r"[^\w\s]+")
_TRAILING = re.compile(r"(?<=\w)[^\w\s]+$")
_LEADING = re.compile(r"^[^\w\s]+(?=\w)")


def _target_offset(target: str, words: list[Span], j: int, kind: str, punct_outside: bool) -> int:
    """Offset of word boundary ``j`` in ``target``: the start of word ``j`` for an opening (or
    void) tag, the end of word ``j - 1`` for a closing one; inside the word's leading or
    trailing punctuation when the tag was so in the source (``punct_outside``)."""
    if kind == "close":
        if j == 0:
            return 0
        s, e = words[j - 1]
        trailing = _TRAILING.search(target[s:e]) if punct_outside else None
        return s + trailing.start() if trailing else e
    if j == len(words):
        return len(target)
    s, e = words[j]
    leading = _LEADING.match(target[s:e]) if punct_outside else None
    return s + leading.end() if leading else s


def _widen_collapsed_pairs(source: str, tags: Sequence[Tag], pos: list[int], tgt_words: list[Span],
                           length: int) -> None:
    """A matched open/close pair that held text in the source but landed on one point of
    the target gets the next target word (or, at the end, the one before, if no earlier tag
    is in the way)."""
    open_at: dict[str, list[int]] = {}
    for i, tag in enumerate(tags):
        if tag.kind == "open":
            open_at.setdefault(tag.name, []).append(i)
        elif tag.kind == "close" and open_at.get(tag.name):
            o = open_at[tag.name].pop()
            if pos[i] > pos[o] or not source[tags[o].at:tag.at].strip():
                continue
            after = next((e for s, e in tgt_words if s >= pos[o]), None)
            before = next((s for s, e in reversed(tgt_words) if s < pos[o]), None)
            if after is not None:
                pos[i] = after
            elif before is not None and before >= max(pos[:o], default=0):
                pos[o] = before
