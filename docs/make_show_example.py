"""Make docs/show-example.png: `photos show` on one real photo.

    PYTHONPATH=. python docs/make_show_example.py

The classifier is the real EfficientNet-Lite0; the detector and the segmenter have
random weights (real COCO/VOC weights cannot be downloaded where this was made), so
their boxes and mask show the mechanics, not real detections: the caption says so.
The random detector scores boxes around 0.011; a threshold of 0.0113 keeps those a little
above it (up to the detector's cap of 100 boxes), which show the drawing, not objects.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from models.untrained import save_untrained
from pipeline.indexer import index_library
from pipeline.records_reader import load_record
from pipeline.settings import IndexSettings
from pipeline.show import open_upright, render
from pipeline.store import IndexStore

DOCS = Path(__file__).resolve().parent
PHOTO = DOCS.parents[1] / "shared" / "eval" / "imagenet-samples" / "n02099712_Labrador_retriever.JPEG"
CAPTION = "boxes and mask: detector and segmenter with RANDOM weights (no COCO/VOC weights here); labels: real"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        library, weights = Path(tmp) / "library", Path(tmp) / "weights"
        library.mkdir()
        photo = Path(shutil.copy(PHOTO, library / PHOTO.name))
        specs = {"detect": save_untrained("fasterrcnn_mobilenet_v3_large_320_fpn", weights),
                 "segment": save_untrained("lraspp_mobilenet_v3_large", weights)}
        settings = IndexSettings(roots=(str(library),), index_dir=Path(tmp) / "index", weights_dir=weights,
                                 score_threshold=0.0113, ray_num_cpus=2)
        index_library(settings, specs=specs)
        store = IndexStore.open(settings.index_dir, create=False)
        record = load_record(store, settings.index_dir, str(photo))
        store.close()
        render(record, open_upright(str(photo)), CAPTION).save(DOCS / "show-example.png")
    print(DOCS / "show-example.png")


if __name__ == "__main__":
    main()
