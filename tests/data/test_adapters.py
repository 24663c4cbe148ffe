"""Adapters reproduce the published facts of each dataset, and read its official layout."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
import torch
from PIL import Image

from dermino.data.adapters import ADAPTERS, build, fitzpatrick17k, folder, ham10000, isic2017, ph2
from dermino.data.manifest import COLUMNS, validate_manifest
from dermino.data.sample import sample_root

HAM_COUNTS = {"melanocytic nevus": 6705, "melanoma": 1113, "benign keratosis": 1099,
              "basal cell carcinoma": 514, "actinic keratosis / intraepithelial carcinoma": 327,
              "vascular lesion": 142, "dermatofibroma": 115}


def test_registry():
    assert {"ham10000", "ph2", "isic2017", "fitzpatrick17k", "folder"} <= set(ADAPTERS)
    with pytest.raises(KeyError, match="unknown dataset"):
        build("imagenet", ".")


@pytest.fixture(scope="module")
def ham_full(shared_data):
    return ham10000.build_manifest(shared_data / "ham10000")


def test_ham10000_published_facts(ham_full, shared_data):
    df = ham_full
    assert len(df) == 10_015 and df.lesion_id.nunique() == 7_470
    assert df.labels.value_counts().to_dict() == HAM_COUNTS
    assert df.dx_type.value_counts().to_dict() == {"histo": 5340, "follow_up": 3704, "consensus": 902, "confocal": 69}
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert set(df.label_space) == {";".join(sorted(HAM_COUNTS))}
    assert (df["mask"] != "").all() and set(df.modality) == {"dermoscopic"}
    assert set(df.sex) == {"male", "female", ""} and (df.age == "").sum() == 57
    assert df.attrs["root"] == str(shared_data / "ham10000") and df.attrs["missing_images"] == []
    assert not df.image.str.startswith("/").any()
    problems = validate_manifest(df.head(50))
    assert all("split not assigned" in p.message for p in problems)  # adapters leave splits to assign_splits


def test_ham10000_official_layout(tmp_path, shared_data):
    src = shared_data / "ham10000"
    meta = pd.read_csv(src / "HAM10000_metadata.csv").head(6)
    meta.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    for k, iid in enumerate(meta.image_id):
        part = tmp_path / f"HAM10000_images_part_{1 + k % 2}"
        part.mkdir(exist_ok=True)
        if k < 5:  # the last one is absent: recorded, not silently lost
            shutil.copy(src / "images" / f"{iid}.jpg", part / f"{iid}.jpg")
        seg = tmp_path / "HAM10000_segmentations_lesion_tschandl"
        seg.mkdir(exist_ok=True)
        shutil.copy(src / "masks_200x150" / f"{iid}_segmentation.png", seg)
    df = ham10000.build_manifest(tmp_path)
    assert len(df) == 5 and df.attrs["missing_images"] == [meta.image_id.iloc[5]]
    assert df.image.str.startswith("HAM10000_images_part_").all()
    assert df["mask"].str.startswith("HAM10000_segmentations_lesion_tschandl/").all()


def test_ph2_xlsx_facts(shared_data):
    df = ph2.build_manifest(shared_data / "ph2")
    assert df.labels.value_counts().to_dict() == {"common nevus": 80, "atypical nevus": 80, "melanoma": 40}
    crit = ["asymmetry", "pigment_network", "dots_globules", "streaks", "regression_areas", "blue_whitish_veil"]
    colours = ["color_white", "color_red", "color_light_brown", "color_dark_brown", "color_blue_gray", "color_black"]
    assert set(crit + colours + ["histological_diagnosis"]) <= set(df.columns)
    assert set(df.asymmetry) == {"0", "1", "2"} and set(df.pigment_network) == {"AT", "T"}
    assert set(df.streaks) == {"A", "P"} and set(df.color_black) == {"True", "False"}
    assert df.attrs["legend"]["asymmetry"]["2"] == "Fully Asymmetric"
    assert df.attrs["legend"]["blue_whitish_veil"]["P"] == "Present"
    row = df.set_index("image_id").loc["IMD435"]  # last row of the sheet, checked by eye
    assert (row.labels, row.histological_diagnosis, row.asymmetry, row.blue_whitish_veil) == (
        "melanoma", "Lentigo Maligna", "2", "P")
    assert (df["mask"] != "").all()


def test_ph2_txt_fallback_agrees(shared_data):
    x = ph2.build_manifest(shared_data / "ph2").set_index("image_id")
    t = ph2.build_manifest(shared_data / "ph2", table="PH2_dataset.txt").set_index("image_id")
    assert len(t) == 200
    assert (t.labels == x.labels.loc[t.index]).all()
    assert (t.asymmetry == x.asymmetry.loc[t.index]).all()


def test_ph2_official_layout_and_missing(tmp_path, shared_data):
    shutil.copy(shared_data / "ph2" / "PH2_dataset.xlsx", tmp_path)
    for name in ("IMD003", "IMD435"):
        d = tmp_path / "PH2 Dataset images" / name
        (d / f"{name}_Dermoscopic_Image").mkdir(parents=True)
        (d / f"{name}_lesion").mkdir()
        Image.open(shared_data / "ph2" / "images" / f"{name}.jpg").save(d / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
        Image.open(shared_data / "ph2" / "masks" / f"{name}_lesion.png").save(d / f"{name}_lesion" / f"{name}_lesion.bmp")
    df = ph2.build_manifest(tmp_path)
    assert df.image_id.tolist() == ["IMD003", "IMD435"]
    assert df.image.iloc[0] == "PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp"
    assert df["mask"].iloc[1].endswith("IMD435_lesion/IMD435_lesion.bmp")
    assert len(df.attrs["missing_images"]) == 198


def test_isic2017_facts(shared_data):
    df = isic2017.build_manifest(shared_data / "isic2017")
    assert df.split.value_counts().to_dict() == {"train": 2000, "none": 600, "val": 150}
    assert df.official_split.value_counts().to_dict() == {"train": 2000, "test": 600, "val": 150}
    train = df[df.split == "train"]
    assert (train.labels == "melanoma").sum() == 374
    assert set(df[df.split == "none"].labels) == {""}
    assert set(df[df.split != "none"].label_space) == {"melanoma;nevus or seborrheic keratosis"}
    assert set(df[df.split == "none"].label_space) == {""}  # unlabelled: no supervision at all
    assert set(df.sex) == {"male", "female", ""}


def test_unlabelled_images_get_no_knowledge_supervision():
    """The bundled ISIC test images have no labels: their label-space mask must be all zero,
    or the knowledge loss would read them as negative for every disease."""
    from dermino.knowledge.targets import encode_targets
    from dermino.knowledge.vocabulary import Vocabulary

    df = isic2017.build_manifest(sample_root() / "isic2017")
    unlabelled = df[df.labels == ""]
    assert len(unlabelled) > 0
    from dermino.knowledge.vocabulary import Entry

    vocab = Vocabulary([Entry(n, n) for n in ("melanoma", "nevus or seborrheic keratosis")])
    _, mask = encode_targets(list(df.labels), list(df.label_space), vocab)
    rows = torch.tensor((df.labels == "").to_numpy())
    assert mask[rows].sum() == 0 and mask[~rows].sum(1).min() == 2


def test_isic2017_official_ground_truth_three_classes(tmp_path, shared_data):
    src = shared_data / "isic2017"
    ids = pd.read_csv(src / "ISIC-2017_Validation_Classes.csv").image_id[:4].tolist()
    (tmp_path / "ISIC-2017_Validation_Data").mkdir()
    for i in ids:
        shutil.copy(src / "ISIC-2017_Validation_Data" / f"{i}.jpg", tmp_path / "ISIC-2017_Validation_Data")
        # official archives also hold superpixel maps beside the images: must be ignored
        (tmp_path / "ISIC-2017_Validation_Data" / f"{i}_superpixels.png").write_bytes(b"")
    pd.DataFrame({"image_id": ids, "melanoma": [1.0, 0.0, 0.0, 0.0],
                  "seborrheic_keratosis": [0.0, 1.0, 0.0, 0.0]}).to_csv(
        tmp_path / "ISIC-2017_Validation_Part3_GroundTruth.csv", index=False)
    df = isic2017.build_manifest(tmp_path)
    assert df.labels.tolist() == ["melanoma", "seborrheic keratosis", "melanocytic nevus", "melanocytic nevus"]
    assert set(df.label_space) == {"melanocytic nevus;melanoma;seborrheic keratosis"}
    assert set(df.split) == {"val"} and len(df) == 4


def test_fitzpatrick17k_missing_images_reported(tmp_path, shared_data, caplog):
    table = pd.read_csv(shared_data / "fitzpatrick17k" / "fitzpatrick17k.csv")
    shutil.copy(shared_data / "fitzpatrick17k" / "fitzpatrick17k.csv", tmp_path)
    (tmp_path / "images").mkdir()
    unknown = table[table.fitzpatrick_scale == -1].iloc[0]
    picked = [table.iloc[0], table.iloc[1], unknown]
    for r in picked:
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{r.md5hash}.jpg")
    with caplog.at_level(logging.WARNING):
        df = fitzpatrick17k.build_manifest(tmp_path)
    assert len(df) == 3 and len(df.attrs["missing_images"]) == len(table) - 3
    assert f"{len(table) - 3} of {len(table)}" in caplog.text
    by_id = df.set_index("image_id")
    assert by_id.loc[unknown.md5hash, "fitzpatrick"] == ""
    assert by_id.loc[table.iloc[0].md5hash, "fitzpatrick"] == str(table.iloc[0].fitzpatrick_scale)
    assert set(df.modality) == {"clinical"}
    space = df.label_space.iloc[0].split(";")
    assert "melanoma" in space and "malignant melanoma" not in space and len(space) < 114


def test_folder_subfolders(tmp_path):
    for label, n in (("Melanoma", 2), ("naevus", 3)):
        (tmp_path / label).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "naevus" / "notes.txt").write_text("not an image")
    df = folder.build_manifest(tmp_path)
    assert df.labels.value_counts().to_dict() == {"melanocytic nevus": 3, "melanoma": 2}
    assert set(df.label_space) == {"melanocytic nevus;melanoma"}


def test_folder_csv_with_mapping(tmp_path):
    (tmp_path / "pics").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "pics" / f"{i}.jpg")
    pd.DataFrame({"file": ["pics/0.jpg", "pics/1.jpg", "pics/2.jpg", "pics/9.jpg"],
                  "diagnosis": ["BCC", "mel;nv", "scc", "mel"], "gender": ["F", "male", "", "m"],
                  "clinic": ["a", "b", "c", "d"]}).to_csv(tmp_path / "list.csv", index=False)
    df = folder.build_manifest(tmp_path, csv="list.csv", map="image=file,labels=diagnosis,sex=gender")
    assert df.labels.tolist() == ["basal cell carcinoma", "melanoma;melanocytic nevus", "squamous cell carcinoma"]
    assert df.sex.tolist() == ["female", "male", ""] and df.clinic.tolist() == ["a", "b", "c"]
    assert df.attrs["missing_images"] == ["pics/9.jpg"]
    with pytest.raises(ValueError, match="not manifest columns"):
        folder.parse_mapping("picture=file")
    with pytest.raises(ValueError, match="not in the CSV"):
        folder.build_manifest(tmp_path, csv="list.csv", map="image=path")


def test_bundled_sample_is_read_by_the_same_adapters():
    root = sample_root()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 15 * 1024 * 1024
    ham = ham10000.build_manifest(root / "ham10000")
    assert 250 <= len(ham) <= 350 and ham.labels.nunique() == 7 and ham.attrs["missing_images"] == []
    assert (ham.groupby("lesion_id").size() > 1).sum() >= 10  # several images per lesion kept together
    p = ph2.build_manifest(root / "ph2")
    assert len(p) == 60 and p.labels.nunique() == 3 and p.attrs["missing_images"] == []
    assert p.attrs["legend"]["asymmetry"]["0"] == "Fully Simmetric"
    isic = isic2017.build_manifest(root / "isic2017")
    counts = isic.groupby(["split", "labels"]).size().to_dict()
    assert counts[("train", "melanoma")] > 0 and counts[("train", "nevus or seborrheic keratosis")] > 0
    assert counts[("val", "melanoma")] > 0 and counts[("none", "")] > 0
    assert (root / "README.md").is_file()
