"""`pbxcrm contacts import FILE.csv`: the writer of the store's local contacts, run as a process
against a real SQLite file; the rows are read back with sqlite3, not through pbxcrm."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.test_cli_commands import pbxcrm, write_config

CSV = """number,name,company,owner_extension,url,notes
+7 903 123-45-67,Ivan Petrov,Acme,7181,https://crm.example/contacts/1,ignored column
89161112233,Olga,,,,
anonymous,Nobody,,,,
+79260000000,Bad Owner,,trunk,,
+7 903 123 45 67,Ivan Petrov (again),Acme Ltd,7070,,
"""


async def test_contacts_are_imported_and_bad_rows_named_by_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    source = tmp_path / "contacts.csv"
    source.write_text(CSV, encoding="utf-8")
    code, out, err = await pbxcrm("contacts", "import", str(source), "--config", str(config))
    assert code == 1, err  # some rows were skipped
    assert out.startswith("3 contact(s) imported")
    assert "line 4: number 'anonymous' has no digits (skipped)" in err
    assert "line 5: owner_extension 'trunk' is not digits (skipped)" in err
    with sqlite3.connect(tmp_path / "store.sqlite3") as db:
        rows = db.execute(
            "SELECT number_digits, name, company, owner_extension, url FROM contacts"
            " ORDER BY number_digits"
        ).fetchall()
    # The second +7 903 ... row replaced the first (same digits).
    assert rows == [
        ("79031234567", "Ivan Petrov (again)", "Acme Ltd", "7070", None),
        ("89161112233", "Olga", None, None, None),
    ]


async def test_a_file_without_a_number_column_is_refused_whole(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    source = tmp_path / "contacts.csv"
    source.write_text("phone,name\n+79031234567,Ivan\n", encoding="utf-8")
    code, _, err = await pbxcrm("contacts", "import", str(source), "--config", str(config))
    assert code == 2
    assert "at least `number`" in err
