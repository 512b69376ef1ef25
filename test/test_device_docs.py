"""docs/devices/<kind>.md shows the options the code declares (issue 20, part 2): each page's tables are generated from
the kinds' Option declarations by `make docs` (filesync.docs), so a page that differs from the code fails here."""
import os

import pytest

from filesync import docs

DOCS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "docs", "devices"))


def test_a_page_per_registered_kind():
    assert docs.device_kinds() == ["drive", "flight_review", "folder", "ftp", "http", "mavlink", "mavros", "s3",
                                   "sftp"]
    assert sorted(name for name in os.listdir(DOCS) if name.endswith(".md")) == \
        [f"{kind}.md" for kind in docs.device_kinds()]


@pytest.mark.parametrize("kind", docs.device_kinds())
def test_the_page_shows_the_declared_options(kind):
    path = os.path.join(DOCS, f"{kind}.md")
    assert path not in docs.stale_pages(DOCS), \
        f"{path}: its options table differs from the code's Option declarations; run `make docs` and commit the page"


def test_a_changed_option_makes_its_page_stale(tmp_path, monkeypatch):
    assert docs.main([str(tmp_path)]) == 0  # a skeleton page for every kind
    assert docs.stale_pages(str(tmp_path)) == {}
    folder_source = docs.device_roles("folder")[0][1]
    monkeypatch.setattr(docs.device_options(folder_source)[0], "help", "Changed.")
    assert list(docs.stale_pages(str(tmp_path))) == [str(tmp_path / "folder.md")]
    assert docs.main([str(tmp_path), "--check"]) == 1


def test_the_prose_around_the_table_is_kept(tmp_path):
    page = tmp_path / "s3.md"
    page.write_text(f"# s3\n\nHand-written.\n\n{docs.BEGIN}\nold table\n{docs.END}\n\nMore prose.\n", encoding="utf-8")
    docs.main([str(tmp_path)])
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# s3\n\nHand-written.\n\n") and text.endswith(f"{docs.END}\n\nMore prose.\n")
    assert "old table" not in text and "| `bucket` |" in text


def test_a_row_shows_type_default_secret_meaning_and_choices():
    s3 = docs.device_roles("s3")[0][1]
    table = docs.options_table([option for option in docs.device_options(s3)
                                if option.name in ("bucket", "addressing_style", "secret_access_key")])
    assert "| `bucket` | string | required | no | The bucket the objects go into; it must exist. |" in table
    assert "| `addressing_style` | string | `\"auto\"` | no |" in table
    assert "One of: `auto`, `path`, `virtual`. |" in table
    assert "| `secret_access_key` | string | `\"\"` | yes |" in table
