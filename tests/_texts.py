"""Short Italian sentences shared by the chunking, edit-kill and serve race tests."""

SENTENCES = [
    "Il Colosseo è l'anfiteatro più grande del mondo romano.",
    "Fu costruito sotto la dinastia flavia nel primo secolo.",
    "Poteva ospitare decine di migliaia di spettatori.",
    "Oggi è uno dei monumenti più visitati d'Italia.",
    "La Gioconda è conservata al museo del Louvre di Parigi.",
    "Leonardo da Vinci la dipinse all'inizio del Cinquecento.",
    "Il Po è il fiume più lungo d'Italia e sfocia nell'Adriatico.",
    "Napoli è famosa per la pizza margherita e per il Vesuvio.",
]
