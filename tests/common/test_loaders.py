"""Loaders on tiny files written by the tests: good files, and bad ones named precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.common.data.csvlog import load_csv_log
from fedrec.common.data.errors import DataFormatError
from fedrec.common.data.interactions import EventType
from fedrec.common.data.movielens import load_ml_1m, load_ml_100k, load_ml_latest
from fedrec.common.data.registry import DatasetNotFoundError, dataset_dir, load_dataset


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _u_item_line(movie_id: int, genres: list[int]) -> str:
    return f"{movie_id}|Film {movie_id} (1995)|01-Jan-1995||http://x|" + "|".join(map(str, genres))


def test_ml_100k_reindexes_ids_and_reads_genres(tmp_path):
    _write(tmp_path / "u.data", "10\t7\t4\t881250949\n3\t7\t2\t891717742\n10\t2\t5\t878887116\n")
    g7 = [0] * 19
    g7[1] = g7[8] = 1  # Action, Drama
    g2 = [0] * 19
    g2[5] = 1  # Comedy
    _write(tmp_path / "u.item", _u_item_line(2, g2) + "\n" + _u_item_line(7, g7) + "\n",
           "latin-1")
    d = load_ml_100k(tmp_path)
    assert (d.n_users, d.n_items, len(d)) == (2, 2, 3)
    np.testing.assert_array_equal(d.users.raw, [3, 10])
    np.testing.assert_array_equal(d.user, [1, 0, 1])  # file order kept, dense ids
    np.testing.assert_array_equal(d.item, [1, 1, 0])
    np.testing.assert_array_equal(d.value, [4, 2, 5])
    assert d.users.index(10) == 1
    assert (d.event == EventType.RATING).all()
    names = d.item_features.names
    assert d.item_features.matrix[1, names.index("Action")] == 1
    assert d.item_features.matrix[1, names.index("Drama")] == 1
    assert d.item_features.matrix[0].sum() == 1


@pytest.mark.parametrize(("text", "line", "field"), [
    ("1\t2\t3\t100\n1\tx\t3\t100\n", 2, "item"),
    ("1\t2\t3\t100\n1\t2\t3\n", 2, None),
    ("1\t2\t3.5\t100\n1\t2\t3\t1.5\n", 2, "timestamp"),
    ("1\t2\t3\t100\n4\t5\t99\t100\n", 2, "rating"),
    ("1\t2\tnan\t100\n", 1, "rating"),
])
def test_ml_100k_errors_name_file_line_and_field(tmp_path, text, line, field):
    path = _write(tmp_path / "u.data", text)
    with pytest.raises(DataFormatError) as info:
        load_ml_100k(tmp_path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert str(err).startswith(f"{path}:{line}: ")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataFormatError, match=r"u\.data: file not found"):
        load_ml_100k(tmp_path)


def test_ml_1m_double_colon_format_and_genres(tmp_path):
    _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n", "latin-1")
    _write(tmp_path / "movies.dat",
           "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
           "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n", "latin-1")
    d = load_ml_1m(tmp_path)
    assert len(d) == 2 and d.n_items == 2
    names = d.item_features.names
    assert d.item_features.matrix[d.items.index(1193), names.index("Drama")] == 1
    assert d.item_features.matrix[d.items.index(661)].sum() == 3


def test_ml_latest_tolerates_crlf_and_half_stars(tmp_path):
    _write(tmp_path / "ratings.csv",
           "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,3,3.5,964981247\r\n")
    _write(tmp_path / "movies.csv",
           'movieId,title,genres\r\n1,"Toy Story, The (1995)",Adventure|Animation\r\n'
           "3,Grumpier Old Men (1995),(no genres listed)\r\n")
    d = load_ml_latest(tmp_path)
    np.testing.assert_array_equal(d.value, [4.0, 3.5])
    assert d.item_features.names == ("Adventure", "Animation")
    assert d.item_features.matrix[1].sum() == 0


def test_ml_latest_bad_header_and_bad_row(tmp_path):
    _write(tmp_path / "ratings.csv", "user,movie,rating,ts\n1,1,4,1\n")
    with pytest.raises(DataFormatError, match=r"ratings.csv:1: expected header"):
        load_ml_latest(tmp_path)
    _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,1\n1,2,four,1\n")
    with pytest.raises(DataFormatError, match=r"ratings.csv:3: field 'rating'"):
        load_ml_latest(tmp_path)


def test_csv_log_with_event_types_and_iso_times(tmp_path):
    path = _write(tmp_path / "log.csv",
                  "user,item,event,value,timestamp\n"
                  "alice,sku-1,view,,2026-01-01T10:00:00Z\n"
                  "alice,sku-1,purchase,,2026-01-01T10:05:00Z\n"
                  "bob,sku-2,rating,4,1767261600\n")
    d = load_csv_log(path)
    np.testing.assert_array_equal(d.event, [EventType.VIEW, EventType.PURCHASE,
                                            EventType.RATING])
    np.testing.assert_array_equal(d.value, [1, 1, 4])
    assert d.timestamp[1] - d.timestamp[0] == 300
    assert list(d.users.raw) == ["alice", "bob"]
    assert d.name == f"csv:{path}"


def test_csv_log_of_ratings_only_uses_file_order_as_time(tmp_path):
    path = _write(tmp_path / "r.csv", "item,user,value\nA,u1,5\nB,u1,3\n")
    d = load_csv_log(path)
    np.testing.assert_array_equal(d.timestamp, [2, 3])
    assert (d.event == EventType.RATING).all()


@pytest.mark.parametrize(("text", "line", "field"), [
    ("user,item,value\nu,i,5\nu,i,\n", 3, "value"),
    ("user,item,event\nu,i,view\nu,i,like\n", 3, "event"),
    ("user,item,event,timestamp\nu,i,view,yesterday\n", 2, "timestamp"),
    ("user,item,value\nu,i\n", 2, None),
    ("user,item,value\n,i,4\n", 2, "user"),
    ("user,item,score\nu,i,4\n", 1, "score"),
    ("user,event\nu,view\n", 1, "item"),
    ("user,item\nu,i\n", 1, "value"),
    ("user,item,value\nu,i,4\nu,j,1e39\n", 3, "value"),  # beyond float32: would be inf
    ("user,item,value\nu,i,5000000\n", 2, "value"),  # not a rating scale
    ("user,item,value\nu,i,-1\n", 2, "value"),
    ("user,item,event,value\nu,i,view,3.5e38\n", 2, "value"),
    ("user,item,value,timestamp\nu,i,4,99999999999999999999999\n", 2, "timestamp"),
])
def test_csv_log_errors_name_line_and_field(tmp_path, text, line, field):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataFormatError) as info:
        load_csv_log(path)
    assert (info.value.line, info.value.field) == (line, field)


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser,item,value\r\nu1,i1,4\r\nu2,i1,5\r\n")
    data = load_csv_log(path)
    assert data.value.tolist() == [4.0, 5.0] and data.users.raw.tolist() == ["u1", "u2"]


def test_registry_finds_folders_and_says_where_it_looked(tmp_path, monkeypatch):
    _write(tmp_path / "ml-100k" / "u.data", "1\t1\t5\t1\n")
    assert dataset_dir("ml-100k", tmp_path) == tmp_path / "ml-100k"
    assert dataset_dir("ml-100k", tmp_path / "ml-100k") == tmp_path / "ml-100k"
    monkeypatch.setenv("FEDREC_DATA", str(tmp_path))
    assert len(load_dataset("ml-100k")) == 1
    with pytest.raises(DatasetNotFoundError, match="fedrec download ml-1m"):
        dataset_dir("ml-1m")
    monkeypatch.delenv("FEDREC_DATA")
    with pytest.raises(DatasetNotFoundError, match="FEDREC_DATA"):
        dataset_dir("ml-100k")
    with pytest.raises(ValueError, match="Unknown dataset 'netflix'"):
        load_dataset("netflix")


def test_synthetic_names_carry_shop_parameters():
    d = load_dataset("synthetic:n_users=50,n_items=40,n_events=2000,seed=3")
    assert (d.n_users, d.n_items) == (50, 40)
    with pytest.raises(ValueError, match="'colour=red' is not KEY=VALUE"):
        load_dataset("synthetic:colour=red")
    with pytest.raises(ValueError, match="n_users must be int"):
        load_dataset("synthetic:n_users=many")
