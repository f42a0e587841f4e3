"""The search benchmark keeps working: built and timed at a tiny size (the real run is 1M photos)."""

from __future__ import annotations

import sqlite3

from benchmarks.search_scale import build, measure, towns
from pipeline.places import fold


def test_benchmark_builds_a_searchable_index_and_times_every_kind(tmp_path):
    seconds, scoring = build(tmp_path, 300, seed=1)
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 300
    assert db.execute("SELECT count(DISTINCT photo_id) FROM labels").fetchone()[0] == 300
    dated = db.execute("SELECT count(*) FROM photo_meta WHERE taken IS NOT NULL").fetchone()[0]
    assert 200 < dated < 300  # about 85%
    home = fold(towns(300, 1)[0]["city"])
    assert db.execute("SELECT count(*) FROM photo_places WHERE name = ?", (home,)).fetchone()[0] > 50
    latency = measure(tmp_path, queries=3, seed=1, home=home)
    assert set(latency) == {"one term", "three terms", "terms + date + place", "filters only (year + place)"}
    assert all(0 < v["p50_ms"] <= v["p95_ms"] for v in latency.values()) and seconds > scoring > 0
    # The concept scores were built as a run would build them on an older index.
    assert db.execute("SELECT covered_through FROM concept_state").fetchone()[0] == 300
    assert db.execute("SELECT count(DISTINCT photo_id) FROM concept_scores").fetchone()[0] > 250
