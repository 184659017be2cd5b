"""Tests for the embedded toy data set (lib/datasets/toy_generator.py).

The demo and the end-to-end tests trust this data to be valid VOC, so these
checks read it back the way a VOC loader would (xml.etree, ImageSets lists,
1-based inclusive boxes) and pin down determinism and the manifest-based
skip that keeps `make demo` re-runs quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "lib") not in sys.path:
    sys.path.insert(0, str(REPO / "lib"))

from datasets.toy_generator import MANIFEST_NAME, TOY_CLASSES, make_toy_dataset  # noqa: E402

SMALL = dict(seed=3, num_trainval=8, num_test=5)


def _year(out: Path) -> Path:
    return out / "VOCdevkit2007" / "VOC2007"


def _read_list(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split()


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _objects(xml_path: Path) -> list[dict]:
    root = ET.parse(xml_path).getroot()
    out = []
    for ob in root.findall("object"):
        box = ob.find("bndbox")
        out.append({
            "name": ob.findtext("name"),
            "difficult": int(ob.findtext("difficult")),
            "truncated": int(ob.findtext("truncated")),
            "box": [int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")],
        })
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("toy")
    summary = make_toy_dataset(out, **SMALL)
    return out, summary


def test_layout_and_image_sets(toy: tuple[Path, dict]) -> None:
    out, summary = toy
    year = _year(out)
    assert (out / "classes.txt").read_text().splitlines() == list(TOY_CLASSES)
    sets = year / "ImageSets" / "Main"
    trainval, test = _read_list(sets / "trainval.txt"), _read_list(sets / "test.txt")
    train, val = _read_list(sets / "train.txt"), _read_list(sets / "val.txt")
    assert len(trainval) == SMALL["num_trainval"] and len(test) == SMALL["num_test"]
    assert sorted(train + val) == sorted(trainval) and not set(train) & set(val)
    assert not set(trainval) & set(test)
    assert all(len(i) == 6 and i.isdigit() for i in trainval + test)
    for image_id in trainval + test:
        assert (year / "JPEGImages" / f"{image_id}.jpg").is_file()
        assert (year / "Annotations" / f"{image_id}.xml").is_file()
    assert summary["splits"] == {"trainval": 8, "train": 4, "val": 4, "test": 5}
    assert summary["skipped"] is False


def test_per_class_sets_match_annotations(toy: tuple[Path, dict]) -> None:
    out, _ = toy
    year = _year(out)
    sets = year / "ImageSets" / "Main"
    for split in ("trainval", "train", "val", "test"):
        ids = _read_list(sets / f"{split}.txt")
        for cls in TOY_CLASSES:
            rows = [line.split() for line in (sets / f"{cls}_{split}.txt").read_text().splitlines()]
            assert [r[0] for r in rows] == ids
            for image_id, label in rows:
                objs = [o for o in _objects(year / "Annotations" / f"{image_id}.xml") if o["name"] == cls]
                expected = -1 if not objs else (1 if any(not o["difficult"] for o in objs) else 0)
                assert int(label) == expected


def test_annotations_are_valid_voc(toy: tuple[Path, dict]) -> None:
    out, summary = toy
    year = _year(out)
    n_objects = n_difficult = 0
    for xml_path in sorted((year / "Annotations").glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        assert root.tag == "annotation"
        assert root.findtext("filename") == xml_path.stem + ".jpg"
        img = cv2.imread(str(year / "JPEGImages" / root.findtext("filename")))
        assert img is not None and img.dtype == np.uint8
        h, w = img.shape[:2]
        assert int(root.findtext("size/width")) == w
        assert int(root.findtext("size/height")) == h
        assert int(root.findtext("size/depth")) == 3 == img.shape[2]
        objs = _objects(xml_path)
        assert 1 <= len(objs) <= 5
        for ob_node in root.findall("object"):
            assert ob_node.findtext("pose") == "Unspecified"
        for ob in objs:
            assert ob["name"] in TOY_CLASSES
            assert ob["difficult"] in (0, 1) and ob["truncated"] in (0, 1)
            x1, y1, x2, y2 = ob["box"]
            # VOC boxes are 1-based and inclusive.
            assert 1 <= x1 <= x2 <= w and 1 <= y1 <= y2 <= h
            assert x2 - x1 >= 4 and y2 - y1 >= 4
            n_objects += 1
            n_difficult += ob["difficult"]
    assert n_objects == summary["num_objects"]
    assert n_difficult == summary["num_difficult"]


def test_boxes_enclose_coloured_objects(toy: tuple[Path, dict]) -> None:
    """Object pixels are saturated and backgrounds muted: a non-difficult box
    must contain clearly more saturation than the image on average."""
    out, _ = toy
    year = _year(out)
    for xml_path in sorted((year / "Annotations").glob("*.xml"))[:6]:
        img = cv2.imread(str(year / "JPEGImages" / (xml_path.stem + ".jpg")))
        sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1].astype(np.float32)
        for ob in _objects(xml_path):
            if ob["difficult"]:
                continue
            x1, y1, x2, y2 = (v - 1 for v in ob["box"])
            assert sat[y1:y2 + 1, x1:x2 + 1].mean() > sat.mean()


def test_class_coverage(toy: tuple[Path, dict]) -> None:
    out, summary = toy
    year = _year(out)
    sets = year / "ImageSets" / "Main"
    for split in ("trainval", "test"):
        seen = set()
        for image_id in _read_list(sets / f"{split}.txt"):
            seen.update(o["name"] for o in _objects(year / "Annotations" / f"{image_id}.xml"))
        assert seen == set(TOY_CLASSES), split
    assert all(summary["objects_per_class"][c] > 0 for c in TOY_CLASSES)


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    a = make_toy_dataset(tmp_path / "a", **SMALL)
    b = make_toy_dataset(tmp_path / "b", **SMALL)
    assert a["num_objects"] == b["num_objects"]
    files_a, files_b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert all(files_a[k] == files_b[k] for k in files_a)


def test_different_seed_differs(tmp_path: Path) -> None:
    make_toy_dataset(tmp_path / "a", **SMALL)
    make_toy_dataset(tmp_path / "b", **{**SMALL, "seed": SMALL["seed"] + 1})
    jpg_a = _all_files(_year(tmp_path / "a") / "JPEGImages")
    jpg_b = _all_files(_year(tmp_path / "b") / "JPEGImages")
    assert jpg_a.keys() == jpg_b.keys()
    assert all(jpg_a[k] != jpg_b[k] for k in jpg_a)


def test_test_split_independent_of_trainval_size(tmp_path: Path) -> None:
    """Each image has its own random stream, so growing trainval leaves the
    test images unchanged (only their ids shift)."""
    make_toy_dataset(tmp_path / "a", seed=1, num_trainval=3, num_test=3)
    make_toy_dataset(tmp_path / "b", seed=1, num_trainval=5, num_test=3)
    test_a = [(_year(tmp_path / "a") / "JPEGImages" / f"{i:06d}.jpg").read_bytes() for i in (4, 5, 6)]
    test_b = [(_year(tmp_path / "b") / "JPEGImages" / f"{i:06d}.jpg").read_bytes() for i in (6, 7, 8)]
    assert test_a == test_b


def test_manifest_skip_and_force(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    first = make_toy_dataset(out, **SMALL)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and manifest["params"]["seed"] == SMALL["seed"]
    assert len(manifest["generator_sha256"]) == 64

    probe = _year(out) / "JPEGImages" / "000001.jpg"
    stamp = probe.stat().st_mtime_ns
    again = make_toy_dataset(out, **SMALL)
    assert again["skipped"] is True
    assert again["num_objects"] == first["num_objects"]
    assert probe.stat().st_mtime_ns == stamp

    forced = make_toy_dataset(out, force=True, **SMALL)
    assert forced["skipped"] is False

    changed = make_toy_dataset(out, **{**SMALL, "num_test": 2})
    assert changed["skipped"] is False
    assert len(_read_list(_year(out) / "ImageSets" / "Main" / "test.txt")) == 2
    # The rebuilt set replaces the old one entirely: no stale images remain.
    assert len(list((_year(out) / "JPEGImages").glob("*.jpg"))) == SMALL["num_trainval"] + 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_missing_images_trigger_rebuild(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    make_toy_dataset(out, **SMALL)
    (_year(out) / "JPEGImages" / "000002.jpg").unlink()
    assert make_toy_dataset(out, **SMALL)["skipped"] is False
    assert (_year(out) / "JPEGImages" / "000002.jpg").is_file()


def test_refuses_to_replace_foreign_devkit(tmp_path: Path) -> None:
    real = tmp_path / "real_voc"
    (real / "VOC2007").mkdir(parents=True)
    out = tmp_path / "data"
    out.mkdir()
    os.symlink(real, out / "VOCdevkit2007")
    with pytest.raises(FileExistsError):
        make_toy_dataset(out, **SMALL)
    assert (real / "VOC2007").is_dir()


def test_class_selection_and_validation(tmp_path: Path) -> None:
    summary = make_toy_dataset(tmp_path / "c", seed=0, num_trainval=4, num_test=0,
                               classes=["hexagon", "cross"])
    assert summary["classes"] == ["hexagon", "cross"]
    assert (tmp_path / "c" / "classes.txt").read_text().split() == ["hexagon", "cross"]
    assert make_toy_dataset(tmp_path / "n", seed=0, num_trainval=2, num_test=0,
                            classes=3)["classes"] == list(TOY_CLASSES[:3])
    with pytest.raises(ValueError):
        make_toy_dataset(tmp_path / "x", classes=["blob"], num_trainval=1, num_test=0)
    with pytest.raises(ValueError):
        make_toy_dataset(tmp_path / "y", num_trainval=0)


def test_size_parameter_sets_shorter_side(tmp_path: Path) -> None:
    make_toy_dataset(tmp_path / "s", seed=0, num_trainval=6, num_test=0, size=128)
    for jpg in (_year(tmp_path / "s") / "JPEGImages").glob("*.jpg"):
        h, w = cv2.imread(str(jpg)).shape[:2]
        assert min(h, w) == 128 and 1.2 * 128 <= max(h, w) <= 1.45 * 128


def test_cli(tmp_path: Path) -> None:
    script = REPO / "data" / "scripts" / "make_toy_dataset.py"
    out = tmp_path / "cli"
    cmd = [sys.executable, str(script), "--out", str(out), "--seed", "5",
           "--num-trainval", "3", "--num-test", "2", "--size", "96", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["num_images"] == 5 and summary["skipped"] is False
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert json.loads(again.stdout)["skipped"] is True
    bad = subprocess.run(cmd[:-1] + ["--classes", "blob"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "unknown toy class" in bad.stderr
