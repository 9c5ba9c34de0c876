"""Document loaders: a folder or a file of ``.txt``, ``.md``, ``.html``, ``.pdf``, ``.docx``,
``.jsonl`` or a BEIR folder, read into documents ready for :meth:`Retriever.index`.

Each file is one document whose id and ``source`` metadata are its path (so indexing the folder
again updates the documents that changed), with a ``title`` (the HTML ``<title>``, the PDF or
DOCX title property, the first Markdown heading; else a first line that reads as a title, in a
PDF or text file; else the file name, underscores as spaces). A PDF's text is its pages
joined by blank lines, as running text (:func:`clean_extracted_text`: words hyphenated at a
line end joined, line breaks inside sentences and runs of spaces made single spaces), and
``page_starts`` (the character offset where each page starts)
lets the chunker give every chunk its ``page``. ``.jsonl`` files and BEIR folders give one
document per row, as before; ``lines=True`` reads ``.txt``/``.md`` files one document per
non-empty line.

Extraction uses well-kept libraries (the ``docs`` extra): pypdf, python-docx, html-text (lxml)
and charset-normalizer, which detects the encoding of text files that are not UTF-8 (Latin-1,
cp1252...). A file that cannot be read (empty, binary, NUL bytes, an undetectable encoding, an
encrypted or image-only PDF, a corrupt DOCX) is named with the reason: skipped with a
:class:`SkippedFileWarning` and recorded in :attr:`DocumentLoader.skipped`, or raised as
:class:`DocumentLoadError` with ``on_error="raise"``.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._deps import require
from ..errors import DocumentLoadError, SkippedFileWarning

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DocumentLoadError",
    "DocumentLoader",
    "SkippedFile",
    "SkippedFileWarning",
    "clean_extracted_text",
    "decode_text",
    "load_documents",
]

#: file suffixes read as documents (a folder with ``corpus.jsonl`` is read as BEIR)
SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl")


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a load, and why."""

    path: str
    reason: str


# ---------------------------------------------------------------------------- text decoding
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# control characters that never occur in text (tab, newlines, form feed excluded)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(data: bytes, path: str | Path) -> str:
    """Decode a text file's bytes: a BOM, else UTF-8, else the encoding charset-normalizer
    detects. Newlines become ``\\n``.

    Raises:
        DocumentLoadError: empty, NUL bytes (binary, or UTF-16 without a BOM), no detectable
            encoding, or text that is mostly control characters.
    """
    if not data.strip():
        raise DocumentLoadError(path, "the file is empty")
    text: str | None = None
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as err:
                raise DocumentLoadError(
                    path, f"starts with a {codec} byte-order mark but is not valid {codec} ({err})"
                ) from err
            break
    if text is None:
        if b"\x00" in data:
            raise DocumentLoadError(
                path,
                "contains NUL bytes: it is a binary file (or UTF-16 text without a byte-order "
                "mark); convert it to UTF-8 text or leave it out",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            text = _detect(data, path, err)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(_CONTROL.findall(text)) > max(8, len(text) // 100):
        raise DocumentLoadError(
            path, "is mostly control characters: a binary file, not text; leave it out"
        )
    if not text.strip():
        raise DocumentLoadError(path, "the file holds no text (only whitespace)")
    return text


# Western European code pages first: for Italian text they are the likely ones, and
# charset-normalizer alone often ranks cp1250/cp1258 above cp1252 on short Italian texts.
_WESTERN = ["cp1252", "iso8859_15", "latin_1"]


def _detect(data: bytes, path: str | Path, err: UnicodeDecodeError) -> str:
    """Decode bytes that are not UTF-8: mostly-UTF-8 with invalid bytes is refused (mixed or
    broken encodings), anything else goes to charset-normalizer."""
    decoded = data.decode("utf-8", errors="replace")
    if any(ord(c) > 127 and c != "\ufffd" for c in decoded):
        raise DocumentLoadError(
            path,
            f"is UTF-8 with invalid bytes (from byte {err.start}: mixed or broken encodings); "
            "re-save it as UTF-8",
        ) from err
    charset_normalizer = require("charset_normalizer", "docs")
    best = charset_normalizer.from_bytes(data, cp_isolation=_WESTERN).best()
    if best is None:
        best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise DocumentLoadError(
            path,
            "is not UTF-8 and no text encoding could be detected (a binary file?); "
            "convert it to UTF-8 text or leave it out",
        ) from err
    return str(best)


def _need_text(text: str, path: Path, what: str) -> str:
    if not text.strip():
        raise DocumentLoadError(path, f"no text found in the {what}")
    return text


# ---------------------------------------------------------------------------- one file
def _read_text_file(path: Path, lines: bool = False) -> tuple[str, str]:
    text = decode_text(path.read_bytes(), path)
    if path.suffix.lower() in (".md", ".markdown"):
        heading = re.search(r"^#\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
        if heading:
            return text, heading.group(1)
    # one document per line: the first line is a document, not the file's title
    return text, (not lines and _heading(text)) or _file_title(path)


_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def _read_html(path: Path) -> tuple[str, str]:
    html_text = require("html_text", "docs")
    lxml_html = require("lxml.html", "docs")
    source = _XML_DECL.sub("", decode_text(path.read_bytes(), path))
    try:
        tree = lxml_html.document_fromstring(source)
    except Exception as err:  # lxml raises ParserError, ValueError...
        raise DocumentLoadError(path, f"is not parseable HTML ({err})") from err
    title = " ".join((tree.findtext(".//title") or "").split())
    body = tree.find("body")
    text = html_text.extract_text(body if body is not None else tree)
    if not title:
        h1 = tree.find(".//h1")
        title = " ".join(h1.text_content().split()) if h1 is not None else ""
    return _need_text(text, path, "HTML body"), title or path.stem


# pypdf extracts the text as it is laid out: a line break at every printed line end,
# hyphenated words split across lines, and runs of spaces where words were spaced to justify.
# No extraction library rejoins them for plain text (pypdf's "layout" mode keeps the layout), so
# it is done here: a word hyphenated at a line end and going on in lower case is one word; a
# line break inside a sentence is a space; a line that ends a sentence, and a blank line, stay.
_HYPHENATED = re.compile(r"(\w)[-\u00ad]\n[ \t]*(?=[a-zà-ÿ])")
_SPACES = re.compile(r"[ \t\u00a0]+")
_MID_SENTENCE = re.compile(r"(?<![.!?:;\n])\n(?!\n)")


def clean_extracted_text(text: str) -> str:
    """Text extracted from a PDF as running text: words hyphenated at a line end joined
    (``petroli-\\nfera`` -> ``petrolifera``; ``Emilia-\\nRomagna`` keeps its hyphen), line
    breaks inside a sentence turned into spaces, runs of spaces collapsed to one; a line that
    ends a sentence and a blank line (a paragraph) stay."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    text = _HYPHENATED.sub(r"\1", text)
    text = re.sub(r"-\n(?=\S)", "-", text)  # a hyphen that stays (a capital follows)
    text = _MID_SENTENCE.sub(" ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _heading(text: str) -> str:
    """The first line of ``text`` when it reads as a title (``""`` otherwise): at most 80
    characters, starting with a capital, not ending a sentence or cut by a hyphen, and followed
    by a blank line or by a line that starts a sentence (a line of a paragraph wrapped at the
    page's width goes on instead)."""
    first, _, rest = text.strip().partition("\n")
    first = " ".join(first.split())
    following = rest.lstrip(" \t")
    if (not first or len(first) > 80 or not first[0].isupper() or first[-1] in ".!?,;:-"
            or not following.strip()):
        return ""
    if following.startswith("\n") or following.lstrip()[0].isupper():
        return first
    return ""


def _file_title(path: Path) -> str:
    """A title from a file name: ``Universita_di_Chicago.pdf`` -> ``Universita di Chicago``."""
    return " ".join(re.sub(r"[_]+", " ", path.stem).split()) or path.stem


def _read_pdf(path: Path) -> tuple[str, str, list[int]]:
    pypdf = require("pypdf", "docs")
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentLoadError(
                path, "is an encrypted PDF that needs a password; decrypt it first"
            )
        raw = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentLoadError:
        raise
    except Exception as err:  # pypdf raises PdfReadError, DependencyError, KeyError...
        if "crypt" in str(err).lower():
            raise DocumentLoadError(
                path, f"is an encrypted PDF that cannot be opened ({err}); decrypt it first"
            ) from err
        raise DocumentLoadError(
            path, f"is not a readable PDF ({type(err).__name__}: {err})"
        ) from err
    pages = [clean_extracted_text(page) for page in raw]
    if not any(pages):
        raise DocumentLoadError(
            path,
            f"has no text layer on any of its {len(pages)} pages (a scanned or image-only PDF); "
            "run OCR on it first",
        )
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        parts.append(page)
        offset += len(page) + 2
    title = " ".join(str(meta_title).split())
    first = next((p for p in raw if p.strip()), "")  # its lines as printed
    return "\n\n".join(parts), title or _heading(first) or _file_title(path), starts


def _read_docx(path: Path) -> tuple[str, str]:
    docx = require("docx", "docs")
    try:
        document = docx.Document(str(path))
    except Exception as err:  # PackageNotFoundError, BadZipFile, KeyError...
        raise DocumentLoadError(
            path, f"is not a readable .docx file ({type(err).__name__}: {err})"
        ) from err
    blocks = [p.text.strip() for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            cells = list(dict.fromkeys(c.text.strip() for c in row.cells))
            blocks.append(" | ".join(c for c in cells if c))
    title = (document.core_properties.title or "").strip()
    if not title:
        for p in document.paragraphs:
            if p.style is not None and (p.style.name or "").startswith(("Title", "Heading")):
                title = p.text.strip()
                if title:
                    break
    text = "\n\n".join(b for b in blocks if b)
    return _need_text(text, path, "document"), title or path.stem


def _read_file(path: Path, lines: bool) -> list[dict[str, Any]]:
    """The documents of one file (one, or one per line/row)."""
    suffix = path.suffix.lower()
    source = str(path)
    meta: dict[str, Any] = {"source": source}
    if suffix == ".jsonl":
        from ..data import iter_documents

        try:
            rows = list(iter_documents(path))
        except (ValueError, UnicodeDecodeError) as err:
            raise DocumentLoadError(path, str(err)) from err
        if not rows:
            raise DocumentLoadError(path, "the file holds no documents")
        return [{**r, "metadata": {**meta, **(r.get("metadata") or {})}} for r in rows]
    if suffix in (".html", ".htm"):
        text, title = _read_html(path)
    elif suffix == ".pdf":
        text, title, starts = _read_pdf(path)
        meta["page_starts"] = starts
    elif suffix == ".docx":
        text, title = _read_docx(path)
    else:
        text, title = _read_text_file(path, lines)
        if lines:
            return [
                {"id": f"{source}:{n}", "text": line,
                 "metadata": {**meta, "title": title, "line": n}}
                for n, line in enumerate(text.split("\n"), 1) if line.strip()
            ]
    meta["title"] = title
    return [{"id": source, "text": text, "metadata": meta}]


# ---------------------------------------------------------------------------- folders
def _matches(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


class DocumentLoader:
    """Documents from a folder (recursive) or one file; iterate it to read them lazily.

    Args:
        path: a folder, a BEIR folder (has ``corpus.jsonl``), or one file.
        include: glob patterns, matched against the path relative to the folder and against
            the file name (``"*.pdf"``, ``"leggi/**"``); default: every supported suffix.
        exclude: glob patterns left out (matched the same way); hidden files and folders
            (``.git``...) are always left out.
        on_error: ``"skip"`` (default): an unreadable file is skipped with a
            :class:`SkippedFileWarning` and recorded in :attr:`skipped`; ``"raise"``: it raises
            :class:`DocumentLoadError`.
        lines: read ``.txt``/``.md`` files one document per non-empty line.
        with_title: BEIR folders: embed "title\\ntext" instead of the text alone.

    Attributes:
        skipped: the files left out so far, with the reason.
        n_files: files read so far.

    Example:
        >>> loader = DocumentLoader("articoli/", include=["*.pdf", "*.md"])  # doctest: +SKIP
        >>> retriever.index(loader)  # doctest: +SKIP
        >>> loader.skipped  # doctest: +SKIP
        [SkippedFile(path='articoli/scansione.pdf', reason='has no text layer ...')]
    """

    def __init__(
        self,
        path: str | Path,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        on_error: str = "skip",
        lines: bool = False,
        with_title: bool = False,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or folder")
        for name, value in (("include", include), ("exclude", exclude)):
            if isinstance(value, str):
                raise TypeError(f"{name} takes a list of glob patterns, e.g. [{value!r}]")
        self.include = list(include) if include else [f"*{s}" for s in SUPPORTED_SUFFIXES]
        self.exclude = list(exclude or [])
        self.on_error = on_error
        self.lines = lines
        self.with_title = with_title
        self.skipped: list[SkippedFile] = []
        self.n_files = 0

    def files(self) -> list[Path]:
        """The files this loader reads, in a stable (sorted) order."""
        if self.path.is_file():
            return [self.path]
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            rel_s = rel.as_posix()
            if _matches(rel_s, p.name, self.include) and not _matches(rel_s, p.name, self.exclude):
                out.append(p)
        return out

    @property
    def is_beir(self) -> bool:
        """Whether the path is a BEIR folder (read as one corpus, not file by file)."""
        return self.path.is_dir() and (self.path / "corpus.jsonl").exists()

    def read_file(self, path: Path) -> list[dict[str, Any]]:
        """The documents of one file; an unreadable one is skipped (``[]``) or raised, as
        ``on_error`` says."""
        reason: str | None = None
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            reason = (f"unsupported file type {path.suffix!r}; supported: "
                      + ", ".join(SUPPORTED_SUFFIXES))
            if self.on_error == "raise":
                raise DocumentLoadError(path, reason)
        else:
            try:
                docs = _read_file(path, self.lines)
            except DocumentLoadError as err:
                if self.on_error == "raise":
                    raise
                reason = err.reason
            except OSError as err:
                reason = f"cannot be read ({err.strerror or err})"
                if self.on_error == "raise":
                    raise DocumentLoadError(path, reason) from err
        if reason is not None:
            self.skipped.append(SkippedFile(str(path), reason))
            warnings.warn(f"skipped {path}: {reason}", SkippedFileWarning, stacklevel=2)
            return []
        self.n_files += 1
        return docs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.is_beir:
            from ..data import iter_documents

            yield from iter_documents(self.path, with_title=self.with_title)
            return
        for path in self.files():
            yield from self.read_file(path)


def load_documents(
    path: str | Path,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    on_error: str = "skip",
    lines: bool = False,
) -> list[dict[str, Any]]:
    """Every document of a folder or file, as a list (see :class:`DocumentLoader`)."""
    return list(
        DocumentLoader(path, include=include, exclude=exclude, on_error=on_error, lines=lines)
    )
