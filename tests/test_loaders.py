"""Loaders: real PDF, DOCX and HTML files written by the tests, encodings, and bad files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from bertino_rag.indexing.loaders import (
    DocumentLoader,
    DocumentLoadError,
    SkippedFileWarning,
    load_documents,
)

ITALIAN = "Perché la città è così bella? Però è già più tardi."


def write_pdf(path: Path, pages: list[str], *, password: str | None = None,
              title: str | None = None) -> Path:
    """A real PDF with one Helvetica text line per page (an empty string: a page with no
    text layer, as a scanned page has)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
    }))
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        if text:
            escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            stream = DecodedStreamObject()
            stream.set_data(b"BT /F1 12 Tf 72 720 Td (" + escaped.encode("cp1252") + b") Tj ET")
            page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    if password:
        writer.encrypt(password, algorithm="RC4-128")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def write_docx(path: Path, paragraphs: list[str], title: str | None = None) -> Path:
    import docx

    document = docx.Document()
    if title:
        document.add_heading(title, level=1)
    for p in paragraphs:
        document.add_paragraph(p)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Regione"
    table.rows[0].cells[1].text = "Toscana"
    document.save(str(path))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text(ITALIAN + "\n\nSecondo paragrafo.", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("# Il Titolo\n\nTesto in markdown.", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Pagina di prova</title><style>p{}</style>"
        "<script>var x = 1;</script></head><body><h1>Intestazione</h1><p>Primo "
        "paragrafo.</p><p>Secondo &egrave; qui.</p></body></html>", encoding="utf-8")
    write_pdf(tmp_path / "d.pdf", ["Pagina uno della città.", "Pagina due."], title="Un PDF")
    write_docx(tmp_path / "sub" / "e.docx", ["Il primo paragrafo.", "Il secondo."],
               title="Documento Word")
    (tmp_path / ".hidden.txt").write_text("nascosto", encoding="utf-8")
    (tmp_path / "ignored.csv").write_text("a,b", encoding="utf-8")
    return tmp_path


def test_folder_recursion_reads_every_format_with_source_and_title(folder):
    docs = {Path(d["metadata"]["source"]).name: d for d in load_documents(folder)}
    assert sorted(docs) == ["a.txt", "b.md", "c.html", "d.pdf", "e.docx"]
    for d in docs.values():
        assert d["id"] == d["metadata"]["source"]
    assert docs["a.txt"]["text"].startswith(ITALIAN)
    assert docs["a.txt"]["metadata"]["title"] == "a"
    assert docs["b.md"]["metadata"]["title"] == "Il Titolo"
    html = docs["c.html"]
    assert html["metadata"]["title"] == "Pagina di prova"
    assert "Secondo è qui." in html["text"] and "var x" not in html["text"]
    assert "Pagina di prova" not in html["text"]  # the head is not body text
    assert "\n\n" in html["text"]  # block elements keep paragraph breaks
    pdf = docs["d.pdf"]
    assert pdf["metadata"]["title"] == "Un PDF"
    assert "Pagina uno della città." in pdf["text"] and "Pagina due." in pdf["text"]
    starts = pdf["metadata"]["page_starts"]
    assert starts[0] == 0 and pdf["text"][starts[1]:].startswith("Pagina due.")
    word = docs["e.docx"]
    assert word["metadata"]["title"] == "Documento Word"
    assert "Il primo paragrafo.\n\nIl secondo." in word["text"]
    assert "Regione | Toscana" in word["text"]


def test_include_and_exclude_globs(folder):
    names = [p.name for p in DocumentLoader(folder, include=["*.pdf", "sub/*"]).files()]
    assert names == ["d.pdf", "b.md", "e.docx"]
    names = [p.name for p in DocumentLoader(folder, exclude=["sub/*", "*.html"]).files()]
    assert names == ["a.txt", "d.pdf"]
    with pytest.raises(TypeError, match="list of glob patterns"):
        DocumentLoader(folder, include="*.pdf")  # type: ignore[arg-type]


def test_latin1_and_cp1252_and_utf16_are_detected(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(
        ("Questo è un testo in Latin-1: perché, città, così, più. " * 4).encode("latin-1"))
    (tmp_path / "utf16.txt").write_bytes(ITALIAN.encode("utf-16"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + ITALIAN.encode("utf-8"))
    (tmp_path / "crlf.txt").write_bytes(b"riga uno\r\nriga due\r\n")
    docs = {Path(d["id"]).name: d["text"] for d in load_documents(tmp_path)}
    assert "perché, città, così, più" in docs["latin1.txt"]
    assert docs["utf16.txt"] == ITALIAN
    assert docs["bom.txt"] == ITALIAN
    assert docs["crlf.txt"] == "riga uno\nriga due\n"


def test_lines_reads_one_document_per_line(tmp_path):
    (tmp_path / "righe.txt").write_text("prima riga\n\nseconda riga\n", encoding="utf-8")
    docs = load_documents(tmp_path / "righe.txt", lines=True)
    assert [d["text"] for d in docs] == ["prima riga", "seconda riga"]
    assert [d["metadata"]["line"] for d in docs] == [1, 3]
    assert len({d["id"] for d in docs}) == 2


def bad_files(tmp_path: Path) -> dict[str, str]:
    """Each bad input, and the words its message must contain."""
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_bytes(b"  \n\n ")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "nul.txt").write_bytes(b"testo con un \x00 in mezzo")
    (tmp_path / "broken.txt").write_bytes("città ".encode() + "perché".encode("latin-1"))
    (tmp_path / "noise.txt").write_bytes(bytes((i * 37 + 11) % 255 + 1 for i in range(4000)))
    write_pdf(tmp_path / "locked.pdf", ["Segreto."], password="pw")
    write_pdf(tmp_path / "scan.pdf", ["", ""])
    (tmp_path / "fake.pdf").write_bytes(b"not a pdf at all")
    (tmp_path / "fake.docx").write_bytes(b"PK not a zip")
    (tmp_path / "empty.html").write_text("<html><body><script>x</script></body></html>")
    return {
        "empty.txt": "the file is empty",
        "blank.md": "the file is empty",
        "binary.txt": "NUL bytes",
        "nul.txt": "NUL bytes",
        "broken.txt": "UTF-8 with invalid bytes (from byte 12",
        "noise.txt": "no text encoding could be detected (a binary file?)",
        "locked.pdf": "encrypted PDF",
        "scan.pdf": "no text layer on any of its 2 pages",
        "fake.pdf": "not a readable PDF",
        "fake.docx": "not a readable .docx",
        "empty.html": "no text found in the HTML body",
    }


def test_bad_files_are_skipped_by_name_with_the_reason(tmp_path):
    expected = bad_files(tmp_path)
    (tmp_path / "good.txt").write_text("Un documento valido.", encoding="utf-8")
    loader = DocumentLoader(tmp_path)
    with pytest.warns(SkippedFileWarning) as caught:
        docs = list(loader)
    assert [d["text"] for d in docs] == ["Un documento valido."]
    reasons = {Path(s.path).name: s.reason for s in loader.skipped}
    assert sorted(reasons) == sorted(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    assert len(caught) == len(expected)
    assert all(str(tmp_path) in str(w.message) for w in caught)
    assert loader.n_files == 1


@pytest.mark.parametrize("name", ["nul.txt", "locked.pdf", "scan.pdf", "broken.txt", "noise.txt"])
def test_on_error_raise_is_fatal_and_names_the_file(tmp_path, name):
    expected = bad_files(tmp_path)
    with pytest.raises(DocumentLoadError, match=re.escape(expected[name])) as err:
        load_documents(tmp_path / name, on_error="raise")
    assert err.value.path == str(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_pdf_with_empty_password_opens(tmp_path):
    write_pdf(tmp_path / "open.pdf", ["Testo leggibile."], password="")
    [doc] = load_documents(tmp_path / "open.pdf", on_error="raise")
    assert "Testo leggibile." in doc["text"]


def test_jsonl_and_beir_still_load(tmp_path, squad):
    (tmp_path / "docs.jsonl").write_text(
        '{"id": "x", "text": "uno", "metadata": {"k": 1}}\n{"text": "due"}\n', encoding="utf-8")
    docs = load_documents(tmp_path / "docs.jsonl")
    assert [d["text"] for d in docs] == ["uno", "due"]
    assert docs[0]["metadata"] == {"source": str(tmp_path / "docs.jsonl"), "k": 1}
    from tests.conftest import SQUAD

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beir = load_documents(SQUAD)
    assert len(beir) == len(squad.corpus)


def test_missing_path_and_bad_flag():
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        DocumentLoader("/nonexistent/folder")
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        DocumentLoader(".", on_error="ignore")
