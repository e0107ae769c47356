"""The catalogue file: what it accepts, what it refuses (by file, line and field), and
which new versions extend a running one."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.catalogue import (
    MAX_CATEGORIES,
    CatalogueError,
    catalogue_text,
    parse_catalogue,
    read_catalogue,
    with_changes,
    write_catalogue,
)

GOOD = """sku,title,categories,listed,delisted,feature:price
A-1,Trail shoe,shoes|outdoor,2026-01-01,,59.9
A-2,"Rain jacket, blue",outdoor,1767225600,2026-06-01T12:00:00+02:00,120
B-7,Gift card,,,,
"""


def test_a_catalogue_reads_every_field():
    cat = parse_catalogue(GOOD, "shop.csv")
    assert cat.skus == ("A-1", "A-2", "B-7") and cat.n_items == 3
    assert cat.titles[1] == "Rain jacket, blue"
    assert cat.categories == (("shoes", "outdoor"), ("outdoor",), ())
    assert cat.category_names == ("shoes", "outdoor")
    assert cat.listed[0] == cat.listed[1] == 1767225600.0 and np.isnan(cat.listed[2])
    assert cat.delisted[1] == 1780308000.0 and np.isnan(cat.delisted[0])
    assert cat.feature_names == ("price",)
    np.testing.assert_allclose(cat.features[:, 0], [59.9, 120, 0], rtol=1e-6)
    m = cat.category_matrix()
    assert m.shape == (3, MAX_CATEGORIES) and m.dtype == np.int16
    assert m[0, :2].tolist() == [0, 1] and m[1, :2].tolist() == [1, -1] and (m[2] == -1).all()
    content = cat.content()
    assert content.shape == (3, 3) and content[0, :2].tolist() == [1, 1]
    assert cat.lines == (2, 3, 4)


def test_hidden_follows_listing_times():
    cat = parse_catalogue(GOOD, "shop.csv")
    assert cat.hidden(1767225599.0).tolist() == [True, True, False]  # not listed yet
    assert cat.hidden(1767225600.0).tolist() == [False, False, False]
    assert cat.hidden(1780308000.0).tolist() == [False, True, False]  # A-2 delisted


def test_the_text_round_trips():
    cat = parse_catalogue(GOOD, "shop.csv")
    again = parse_catalogue(catalogue_text(cat), "again.csv")
    assert again.skus == cat.skus and again.categories == cat.categories
    assert again.titles == cat.titles and again.digest() == cat.digest()
    np.testing.assert_array_equal(again.listed, cat.listed)
    np.testing.assert_array_equal(again.delisted, cat.delisted)
    np.testing.assert_array_equal(again.features, cat.features)


HEADER = "sku,title,categories,listed,delisted,feature:price\n"


@pytest.mark.parametrize("text, where, field", [
    ("", "shop.csv:1", None),
    ("sku,categories\nA,x\n", "shop.csv:1", "title"),
    ("sku,title,categories,colour\nA,,x,red\n", "shop.csv:1", "colour"),
    ("sku,title,categories,sku\nA,,x,A\n", "shop.csv:1", "sku"),
    (HEADER + "A,,x,,\n", "shop.csv:2", None),  # a field short
    (HEADER + ",,x,,,1\n", "shop.csv:2", "sku"),
    (HEADER + " A,,x,,,1\n", "shop.csv:2", "sku"),
    (HEADER + "A\tB,,x,,,1\n", "shop.csv:2", "sku"),
    (HEADER + ("S" * 65) + ",,x,,,1\n", "shop.csv:2", "sku"),
    (HEADER + "A,,x,,,1\nA,,y,,,2\n", "shop.csv:3", "sku"),
    (HEADER + "A,,x||y,,,1\n", "shop.csv:2", "categories"),
    (HEADER + "A,,x|x,,,1\n", "shop.csv:2", "categories"),
    (HEADER + "A,," + "|".join(f"c{i}" for i in range(9)) + ",,,1\n", "shop.csv:2",
     "categories"),
    (HEADER + "A,,x,yesterday,,1\n", "shop.csv:2", "listed"),
    (HEADER + "A,,x,,nan,1\n", "shop.csv:2", "delisted"),
    (HEADER + "A,,x,2026-02-01,2026-01-01,1\n", "shop.csv:2", "delisted"),
    (HEADER + "A,,x,,,cheap\n", "shop.csv:2", "feature:price"),
    (HEADER + "A,,x,,,inf\n", "shop.csv:2", "feature:price"),
    (HEADER + "A,,x,,,1e9\n", "shop.csv:2", "feature:price"),
    (HEADER + "A,\"open,,x,,,1\n", "shop.csv", None),  # an unclosed quote
    (HEADER, "shop.csv", None),  # no items
])
def test_bad_catalogues_are_refused_by_line_and_field(text, where, field):
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(text, "shop.csv")
    assert str(err.value).startswith(where)
    assert err.value.field == field


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_bytes(HEADER.encode() + b"A,caf\xe9,x,,,1\n")
    with pytest.raises(CatalogueError, match=r"shop.csv:2: not UTF-8"):
        read_catalogue(path)
    with pytest.raises(CatalogueError, match="cannot read it"):
        read_catalogue(tmp_path / "missing.csv")


def test_new_versions_may_append_and_delist_but_not_reorder_remove_or_recategorise():
    old = parse_catalogue(GOOD, "shop.csv")
    new = with_changes(old, add=[{"sku": "C-1", "categories": "shoes|kids"}],
                       delist={"B-7": 1790000000.0})
    assert new.skus == (*old.skus, "C-1") and new.category_names[-1] == "kids"
    assert new.delisted[2] == 1790000000.0
    assert new.digest(3) == old.digest()  # the old rows are the same items
    lines = GOOD.splitlines()
    reordered = parse_catalogue("\n".join([lines[0], lines[2], lines[1], lines[3]]), "v2.csv")
    with pytest.raises(CatalogueError, match=r"v2.csv:2: field 'sku': row 0 is 'A-1'"):
        reordered.check_extends(old)
    removed = parse_catalogue("\n".join(lines[:3]), "v2.csv")
    with pytest.raises(CatalogueError, match="1 items of the running catalogue are missing"):
        removed.check_extends(old)
    recat = parse_catalogue(GOOD.replace("shoes|outdoor", "shoes"), "v2.csv")
    with pytest.raises(CatalogueError, match=r"v2.csv:2: field 'categories'"):
        recat.check_extends(old)
    with pytest.raises(CatalogueError, match="'A-1' is already the item of line 2"):
        with_changes(old, add=[{"sku": "A-1"}])
    with pytest.raises(CatalogueError, match="not in the catalogue"):
        with_changes(old, delist={"nope": 1.0})


def test_writing_is_all_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "shop.csv"
    cat = parse_catalogue(GOOD, str(path))
    write_catalogue(path, cat)
    before = path.read_bytes()

    def broken(_cat):
        raise OSError("disk full")

    monkeypatch.setattr("fedrec.common.catalogue.catalogue_text", broken)
    with pytest.raises(OSError):
        write_catalogue(path, cat)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["shop.csv"]  # no temp file left
