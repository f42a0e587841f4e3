"""Grouping faces into people: the pure algorithm, then the index tables and commands on
real faces (real photos of ../shared/eval/faces through MTCNN and FaceRes)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from models.faces import FaceFinder
from pipeline.decode import decode_photo
from pipeline.inference import RESULT_SCHEMA
from pipeline.parquet_sink import parquet_dir
from pipeline.people import GroupingSettings, cluster, group_faces, pairwise_scores
from pipeline.people_ops import list_people, name_person, regroup
from pipeline.search import search
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter, ModelKey

FACES = Path(__file__).resolve().parents[2] / "shared" / "eval" / "faces"
WEIGHTS = FACES.parents[1] / "weights" / "facenet-pytorch-2.6.0"


def _blobs(rng: np.random.Generator, centres: np.ndarray, per: int, spread: float) -> np.ndarray:
    x = np.repeat(centres, per, axis=0) + spread * rng.standard_normal((len(centres) * per, centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_clusters_need_min_faces_and_stay_apart():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 64))
    x = np.vstack([_blobs(rng, centres, 5, 0.05), rng.standard_normal((1, 64)) / 8.0])
    groups = cluster(x / np.linalg.norm(x, axis=1, keepdims=True), 0.3, 2)
    assert sorted(map(sorted, groups)) == [list(range(5)), list(range(5, 10)), list(range(10, 15))]


def test_incremental_pass_keeps_people_and_honours_rejections():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((2, 64))
    old = _blobs(rng, centres, 4, 0.05)
    new = _blobs(rng, centres, 2, 0.05)
    x = np.vstack([old, new])
    person_of = [7] * 4 + [3] * 4 + [-1] * 4  # people 7 and 3 exist (ids are never renumbered)
    result = group_faces(x, person_of, [False] * 12, GroupingSettings(0.3, 0.3, 2))
    assert result.assigned == {8: 7, 9: 7, 10: 3, 11: 3} and result.new_people == []
    # "face 8 is not 7": it stays out of 7, and alone it cannot form a person
    result = group_faces(x, person_of, [False] * 12, GroupingSettings(0.3, 0.3, 2), rejected={8: {7}})
    assert 8 not in result.assigned and result.assigned[9] == 7
    # forgotten (frozen) faces are never grouped
    result = group_faces(x, [-1] * 12, [True] * 12)
    assert result.assigned == {} and result.new_people == []


def test_pairwise_scores():
    assert pairwise_scores(["a", "a", "b", "b"], [0, 0, 1, 1]) == (1.0, 1.0)
    p, r = pairwise_scores(["a", "a", "b", "b"], [0, 0, 0, -1])  # pairs: (0,1) ok, (0,2) (1,2) wrong
    assert (round(p, 3), r) == (0.333, 0.5)


# -- the index, on real faces ----------------------------------------------------------------


def _library() -> list[Path]:
    bush = sorted((FACES / "George_W_Bush").iterdir())[:3]
    powell = sorted((FACES / "Colin_Powell").iterdir())[:3]
    return bush + powell


@pytest.fixture(scope="module")
def face_rows():
    """Result rows of 3 photos of Bush and 3 of Powell, as the inference stage makes them."""
    if not FACES.is_dir():
        pytest.fail(f"{FACES} is missing: the tests need the shared face photos")
    finder = FaceFinder.from_folder(WEIGHTS)
    rows = []
    for path in _library():
        photo = decode_photo(str(path), 640, 100_000_000)
        stat = path.stat()
        rows.append({"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "width": photo.width,
                     "height": photo.height, "fingerprint": "f" + path.name, "tasks": "faces", "previous_path": None,
                     "error_stage": "", "error_reason": "",
                     "faces": finder.find(photo.pixels, (photo.width, photo.height))})
    return rows


def _index(tmp_path: Path, rows: list[dict]) -> Path:
    index = tmp_path / "index"
    store = IndexStore.open(index)
    run = store.begin_run([str(FACES)], {"faces": "mtcnn_faceres"})
    writer = IndexWriter(store, parquet_dir(index), run, {"faces": ModelKey("mtcnn_faceres", "pnet.pt")}, 4)
    writer.add(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
    writer.flush()
    regroup(store)
    store.close()
    return index


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_people_from_real_faces_named_searched_merged_forgotten(tmp_path, face_rows):
    assert all(len(r["faces"]) == 1 for r in face_rows)  # one face kept per LFW crop
    index = _index(tmp_path, face_rows)
    listed = json.loads(run_cli("people", "--index", str(index), "--json").output)
    assert sorted(p["photos"] for p in listed) == [3, 3]
    bush = next(p["id"] for p in listed if "Bush" in p["sample"])
    powell = next(p["id"] for p in listed if "Powell" in p["sample"])
    assert run_cli("people", "name", str(bush), "George", "--index", str(index)).exit_code == 0
    assert run_cli("people", "name", str(powell), "Colin", "--index", str(index)).exit_code == 0
    store = IndexStore.open(index, create=False)
    assert {Path(h.path).parent.name for h in search(store, ["george"])} == {"George_W_Bush"}
    assert len(search(store, ["george"])) == 3 and search(store, ["george", "colin"]) == []
    assert len(search(store, [], persons=["COLIN"])) == 3
    # bad input to `people name`: exit 2 with a message, nothing changed
    from pipeline.custom_labels import CustomLabelError, check_name, custom_heads

    with store.engine.begin() as conn:  # a custom label's name is a search word too
        custom_heads.metadata.create_all(conn)
        conn.exec_driver_sql("INSERT INTO custom_heads VALUES ('our dog', 'm', 1, '[]', '[]', 0, 1, 1, 0)")
    with pytest.raises(CustomLabelError, match="name of a person"):  # and the other way round
        check_name(store, "George")
    store.close()
    for args, message in [(("999", "X"), "no person with id 999"), ((str(bush), "  "), "visible character"),
                          ((str(bush), "colin"), "already person"), ((str(bush), "Our  Dog"), "custom label")]:
        result = CliRunner().invoke(cli, ["people", "name", *args, "--index", str(index)])
        assert result.exit_code == 2 and message in result.output
    # remove-face: that face leaves George and is not grouped back by the next pass
    store = IndexStore.open(index, create=False)
    with store.engine.connect() as conn:
        face_id = conn.exec_driver_sql("SELECT id FROM faces WHERE person_id = ? LIMIT 1", (bush,)).scalar()
    assert run_cli("people", "remove-face", str(face_id), "--index", str(index)).exit_code == 0
    regroup(store)
    assert len(search(store, ["george"])) == 2
    # merge: Colin's faces become George's; the kept name wins
    assert run_cli("people", "merge", str(bush), str(powell), "--index", str(index)).exit_code == 0
    assert len(search(store, ["george"])) == 5 and search(store, ["colin"]) == []
    # the contact sheet
    sheet = tmp_path / "george.png"
    assert run_cli("people", "show", str(bush), "--out", str(sheet), "--index", str(index)).exit_code == 0
    from PIL import Image
    assert Image.open(sheet).size[0] >= 128
    # forget: name and embeddings gone, faces never regrouped
    assert run_cli("people", "forget", str(bush), "--index", str(index)).exit_code == 0
    assert regroup(store).new_people == 0
    with store.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT count(*) FROM faces WHERE embedding IS NOT NULL AND state != 'forgotten'"
                                    ).scalar()
    assert left == 1 and list_people(store) == [] and search(store, ["george"]) == []
    store.close()
    table = pq.read_table(parquet_dir(index))
    embeddings = [f["embedding"] for faces in table.column("faces").to_pylist() for f in faces or ()]
    assert sum(e is None for e in embeddings) == 5 and sum(e is not None for e in embeddings) == 1


@pytest.mark.slow
def test_reindexing_keeps_names_and_a_corrupt_embedding_is_one_problem(tmp_path, face_rows):
    index = _index(tmp_path, face_rows)
    store = IndexStore.open(index, create=False)
    bush = next(p.id for p in list_people(store) if "Bush" in p.sample)
    name_person(store, bush, "Anna Maria")
    # the same photos committed again (a re-run): faces keep their ids, people and names
    run = store.begin_run([str(FACES)], {"faces": "mtcnn_faceres"})
    writer = IndexWriter(store, parquet_dir(index), run, {"faces": ModelKey("mtcnn_faceres", "pnet.pt")}, 10)
    writer.add(pa.Table.from_pylist(face_rows, schema=RESULT_SCHEMA))
    writer.flush()
    assert len(search(store, ["anna", "maria"])) == 3
    store.close()
    with sqlite3.connect(index / "index.sqlite") as db:
        db.execute("UPDATE faces SET embedding = x'0000ff7f' WHERE id = (SELECT min(id) FROM faces)")
    store = IndexStore.open(index, create=False)
    report = regroup(store)
    assert len(report.problems) == 1 and "unreadable embedding" in report.problems[0]
    out = CliRunner().invoke(cli, ["people", "group", "--index", str(index)])
    assert out.exit_code == 0 and "unreadable embedding" in out.output
    store.close()


@pytest.mark.slow
def test_index_with_faces_then_people_search_and_show(tmp_path, ray_local):
    """The whole path through the CLI: `photos index --models classify,faces` on real photos
    (three of Bush, three of Powell, one without a face), then people, names, search, show."""
    library = tmp_path / "library"
    library.mkdir()
    for path in _library():
        (library / path.name).write_bytes(path.read_bytes())
    car = FACES.parent / "imagenet-samples" / "n04285008_sports_car.JPEG"
    (library / car.name).write_bytes(car.read_bytes())
    index = tmp_path / "index"
    result = run_cli("index", str(library), "--index", str(index), "--models", "classify,faces",
                     "--weights-dir", str(WEIGHTS), "--quiet")
    assert result.exit_code == 0, result.output
    listed = json.loads(run_cli("people", "--index", str(index), "--json").output)
    assert sorted(p["photos"] for p in listed) == [3, 3]
    bush = next(p["id"] for p in listed if "Bush" in p["sample"])
    assert run_cli("people", "name", str(bush), "Anna", "--index", str(index)).exit_code == 0
    hits = json.loads(run_cli("search", "anna", "--index", str(index), "--json").output)
    assert sorted(Path(h["path"]).name for h in hits) == sorted(p.name for p in _library()[:3])
    assert run_cli("search", "--person", "anna", "--index", str(index)).exit_code == 0
    unknown = CliRunner().invoke(cli, ["search", "--person", "nobody", "--index", str(index)])
    assert unknown.exit_code == 2 and "nobody is named" in unknown.output
    shown = tmp_path / "shown.png"
    first = library / _library()[0].name
    assert run_cli("show", str(first), "--index", str(index), "--out", str(shown)).exit_code == 0
    # a second run changes nothing and keeps the name
    assert run_cli("index", str(library), "--index", str(index), "--models", "classify,faces",
                   "--weights-dir", str(WEIGHTS), "--quiet").exit_code == 0
    assert len(json.loads(run_cli("search", "anna", "--index", str(index), "--json").output)) == 3
