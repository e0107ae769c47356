"""``fedrec catalogue``: show, add, delist and export, each change a whole valid version."""

from __future__ import annotations

import json

from fedrec.common.catalogue import read_catalogue
from fedrec.simulations.cli.main import main


def test_export_show_add_delist(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    assert main(["catalogue", "export", "--dataset",
                 "synthetic:n_users=20,n_items=30,n_events=300", "--out", str(path)]) == 0
    cat = read_catalogue(path)
    assert cat.n_items == 30 and cat.skus[0] == "SKU-00"
    assert all(len(c) == 1 for c in cat.categories)  # the synthetic shop: one each
    capsys.readouterr()
    assert main(["catalogue", "show", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == 30 and info["offered"] == 30 and info["digest"] == cat.digest()
    assert main(["catalogue", "add", str(path), "--sku", "NEW-1", "--title", "Trail shoe",
                 "--categories", "shoes|outdoor"]) == 0
    new = read_catalogue(path)
    assert new.skus[-1] == "NEW-1" and new.categories[-1] == ("shoes", "outdoor")
    assert new.digest(30) == cat.digest()  # old rows untouched
    assert main(["catalogue", "delist", str(path), "SKU-03", "--at", "2090-01-01"]) == 0
    hidden = read_catalogue(path).hidden(4e9)
    assert hidden[3] and hidden.sum() == 1


def test_refused_changes_leave_the_file_as_it_was(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    path.write_text("sku,title,categories\nA,,x\n")
    before = path.read_bytes()
    for argv in (["add", str(path), "--sku", "A"],  # a SKU twice
                 ["add", str(path), "--sku", "B", "--categories", "a||b"],
                 ["add", str(path), "--sku", "B", "--feature", "price=3"],
                 ["delist", str(path), "nope"],
                 ["delist", str(path), "A", "--at", "soon"],
                 ["export", "--out", str(path)]):
        assert main(["catalogue", *argv]) == 2, argv
        assert path.read_bytes() == before
    err = capsys.readouterr().err
    assert "field 'sku': 'A' is already the item of line 2" in err
    assert "field 'categories'" in err and "features are none" in err
    assert "--at: 'soon'" in err and "exists" in err
    path.write_text("sku,title,categories\nA,,x\nB,,y,extra\n")
    assert main(["catalogue", "show", str(path)]) == 2
    assert "shop.csv:3: 4 fields, the header has 3" in capsys.readouterr().err
