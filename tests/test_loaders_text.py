"""PDF text as running text, and titles from the file's own heading (issue 28: double spaces,
hard line breaks mid-sentence and hyphenated line ends reached the hits and the chunker; titles
fell back to file names with underscores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertino_rag.indexing.loaders import clean_extracted_text, load_documents

pytest.importorskip("pypdf")

# one printed page of an Italian article, as a PDF lays it out: a heading, lines cut at the
# page width (one word hyphenated across two lines), words spaced to justify
PAGE = [
    "La crisi petrolifera del 1973",
    "La  crisi  petrolifera  del  1973  iniziò  nell'  ottobre  di  quell'anno,  quando  i",
    "membri  dell'Organizzazione  dei  paesi  arabi  esportatori  di  petro-",
    "lio  proclamarono  un  embargo.  La  crisi  colpì  anche  l'Emilia-",
    "Romagna.",
]


def write_pdf(path: Path, lines: list[str], title: str | None = None) -> Path:
    """A real PDF with one page printing ``lines`` (Helvetica, one text line each)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
    }))
    page = writer.add_blank_page(612, 792)
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    shown = b" T* ".join(b"(" + line.encode("cp1252") + b") Tj" for line in lines)
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 10 Tf 14 TL 72 720 Td " + shown + b" ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def test_pdf_text_is_running_text_and_the_heading_is_its_title(tmp_path):
    [doc] = load_documents(write_pdf(tmp_path / "Universit_di_Chicago.pdf", PAGE),
                           on_error="raise")
    text = doc["text"]
    assert "  " not in text
    assert ("La crisi petrolifera del 1973 iniziò nell' ottobre di quell'anno, quando i membri "
            "dell'Organizzazione dei paesi arabi esportatori di petrolio proclamarono un "
            "embargo.") in text
    assert "l'Emilia-Romagna." in text  # a hyphen before a capital stays
    assert doc["metadata"]["title"] == "La crisi petrolifera del 1973"
    assert doc["metadata"]["page_starts"] == [0]


def test_pdf_title_from_metadata_else_heading_else_file_name(tmp_path):
    [doc] = load_documents(write_pdf(tmp_path / "a.pdf", PAGE, title="Crisi del 1973"),
                           on_error="raise")
    assert doc["metadata"]["title"] == "Crisi del 1973"
    body = PAGE[1:]  # no heading: the first line is a paragraph's, wrapped
    [doc] = load_documents(write_pdf(tmp_path / "Universit_di_Chicago.pdf", body),
                           on_error="raise")
    assert doc["metadata"]["title"] == "Universit di Chicago"


def test_text_file_titles(tmp_path):
    (tmp_path / "Il_Po.txt").write_text("Il fiume Po\n\nIl Po è il fiume più lungo d'Italia.",
                                        encoding="utf-8")
    (tmp_path / "Senza_titolo.txt").write_text("Il Po è il fiume più lungo d'Italia.\nNasce "
                                               "dal Monviso.", encoding="utf-8")
    docs = {Path(d["id"]).name: d for d in load_documents(tmp_path, on_error="raise")}
    assert docs["Il_Po.txt"]["metadata"]["title"] == "Il fiume Po"
    assert docs["Senza_titolo.txt"]["metadata"]["title"] == "Senza titolo"
    lines = load_documents(tmp_path / "Il_Po.txt", lines=True, on_error="raise")
    assert {d["metadata"]["title"] for d in lines} == {"Il Po"}  # lines: the file's name


@pytest.mark.parametrize("raw, clean", [
    ("a  b\t c", "a b c"),
    ("una pa-\nrola", "una parola"),
    ("Emilia-\nRomagna", "Emilia-Romagna"),
    ("una riga\nche continua", "una riga che continua"),
    ("Fine frase.\nNuova frase", "Fine frase.\nNuova frase"),
    ("Primo.\n\n\n\nSecondo.", "Primo.\n\nSecondo."),
    ("a\r\nb", "a b"),
])
def test_clean_extracted_text(raw, clean):
    assert clean_extracted_text(raw) == clean
