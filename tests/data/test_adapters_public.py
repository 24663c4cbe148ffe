"""More public datasets: each adapter reads a small replica of its published layout, built
from real bundled images in a tmp dir (file names, CSV headers and folders as published)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dermino.data.adapters import ADAPTERS, DOWNLOADERS, build
from dermino.data.manifest import COLUMNS, validate_manifest
from dermino.data.sample import sample_root

REAL = sorted((sample_root() / "ham10000" / "images").glob("*.jpg"))[:12]


def put(src_index: int, dst: Path, fmt: str | None = None) -> None:
    """A real bundled image at ``dst`` (converted when the layout uses another format)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        shutil.copyfile(REAL[src_index], dst)
    else:
        Image.open(REAL[src_index]).convert("RGB").save(dst, fmt)


def csv(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")


def isic2016(r: Path) -> dict:
    for k, name in enumerate(["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]):
        put(k, r / "ISBI2016_ISIC_Part3_Training_Data" / f"{name}.jpg")
    put(3, r / "ISBI2016_ISIC_Part3_Test_Data" / "ISIC_0000003.jpg")
    csv(r / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
        "ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\nISIC_0000009,benign")
    csv(r / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", "ISIC_0000003,1.0")
    return {"n": 4, "labels": {"benign lesion": 2, "melanoma": 2}, "splits": {"train": 3, "test": 1}, "missing": 1}


def isic2018(r: Path) -> dict:
    names = ["ISIC_0024306", "ISIC_0024307", "ISIC_0024308"]
    for k, name in enumerate(names):
        put(k, r / "ISIC2018_Task3_Training_Input" / f"{name}.jpg")
    csv(r / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0024307,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_0024308,0.0,0.0,0.0,1.0,0.0,0.0,0.0")
    csv(r / "ISIC2018_Task3_Training_LesionGroupings.csv",
        "image,lesion_id,diagnosis_confirm_type\nISIC_0024306,HAM_0000550,follow_up\n"
        "ISIC_0024307,HAM_0003577,histo\nISIC_0024308,HAM_0003577,histo")
    put(3, r / "ISIC2018_Task3_Test_Input" / "ISIC_0034524.jpg")
    return {"n": 4, "labels": {"melanocytic nevus": 1, "melanoma": 1,
                               "actinic keratosis / intraepithelial carcinoma": 1, "": 1},
            "splits": {"train": 3, "none": 1}, "check": lambda df: df.lesion_id.tolist()[:3] ==
            ["HAM_0000550", "HAM_0003577", "HAM_0003577"] and df.dx_type.iat[1] == "histo"}


def isic2019(r: Path) -> dict:
    for k, name in enumerate(["ISIC_0000000", "ISIC_0000001_downsampled", "ISIC_0000002"]):
        put(k, r / "ISIC_2019_Training_Input" / f"{name}.jpg")
    csv(r / "ISIC_2019_Training_GroundTruth.csv",
        "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000001_downsampled,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n"
        "ISIC_0000002,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0")
    csv(r / "ISIC_2019_Training_Metadata.csv",
        "image,age_approx,anatom_site_general,lesion_id,sex\nISIC_0000000,55,anterior torso,,female\n"
        "ISIC_0000001_downsampled,30,,BCN_0000019,male\nISIC_0000002,,lower extremity,,")
    put(3, r / "ISIC_2019_Test_Input" / "ISIC_0034321.jpg")
    return {"n": 4, "labels": {"melanocytic nevus": 1, "squamous cell carcinoma": 1, "": 2},
            "splits": {"train": 3, "none": 1},
            "check": lambda df: df.sex.tolist()[:2] == ["female", "male"] and df.lesion_id.iat[1] == "BCN_0000019"
            and df.age.iat[0] == "55" and df.site.iat[2] == "lower extremity"}


def isic2020(r: Path) -> dict:
    for k, name in enumerate(["ISIC_2637011", "ISIC_0015719", "ISIC_0052212"]):
        put(k, r / "ISIC_2020_Training_JPEG" / "train" / f"{name}.jpg")
    csv(r / "ISIC_2020_Training_GroundTruth_v2.csv",
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
        "ISIC_2637011,IP_7279968,IL_7972535,male,45.0,head/neck,unknown,benign,0\n"
        "ISIC_0015719,IP_3075186,IL_4649854,female,45.0,upper extremity,nevus,benign,0\n"
        "ISIC_0052212,IP_2842074,IL_9087444,female,50.0,lower extremity,melanoma,malignant,1")
    put(3, r / "ISIC_2020_Test_Input" / "ISIC_0052060.jpg")
    csv(r / "ISIC_2020_Test_Metadata.csv", "image,patient,sex,age_approx,anatom_site_general\n"
        "ISIC_0052060,IP_3579794,male,70.0,")
    return {"n": 4, "labels": {"benign lesion": 1, "melanocytic nevus": 1, "melanoma": 1, "": 1},
            "splits": {"train": 3, "none": 1},
            "check": lambda df: df.patient_id.tolist() == ["IP_7279968", "IP_3075186", "IP_2842074", "IP_3579794"]
            and df.target.tolist()[:3] == ["0", "0", "1"]}


def derm7pt(r: Path) -> dict:
    base = r / "release_v0"
    header = ("case_num,diagnosis,seven_point_score,pigment_network,streaks,pigmentation,regression_structures,"
              "dots_and_globules,blue_whitish_veil,vascular_structures,level_of_diagnostic_difficulty,elevation,"
              "location,sex,management,clinic,derm,notes")
    csv(base / "meta" / "meta.csv", header + "\n"
        "1,basal cell carcinoma,4,absent,absent,absent,absent,absent,absent,arborizing,medium,nodular,abdomen,female,"
        "excision,NEL/Nel026.jpg,NEL/Nel025.jpg,\n"
        "2,melanoma (less than 0.76 mm),6,atypical,irregular,diffuse irregular,blue areas,irregular,present,absent,"
        "high,palpable,back,male,excision,Aal/Aal002.jpg,Aal/Aal001.jpg,")
    for k, p in enumerate(["NEL/Nel026.jpg", "NEL/Nel025.jpg", "Aal/Aal002.jpg", "Aal/Aal001.jpg"]):
        put(k, base / "images" / p)
    csv(base / "meta" / "train_indexes.csv", "indexes\n0")
    csv(base / "meta" / "test_indexes.csv", "indexes\n1")
    return {"n": 4, "labels": {"basal cell carcinoma": 2, "melanoma": 2},
            "splits": {"train": 2, "test": 2},
            "check": lambda df: df.modality.tolist() == ["clinical", "dermoscopic"] * 2
            and df.lesion_id.nunique() == 2 and df.streaks.iat[2] == "irregular"
            and df.diagnosis_detail.iat[2] == "melanoma (less than 0.76 mm)" and df.seven_point_score.iat[3] == "6"}


def pad_ufes20(r: Path) -> dict:
    header = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
              "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
              "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed")
    csv(r / "metadata.csv", header + "\n"
        "PAT_1516,1765,,,,,8,,,,,,,,ARM,,,NEV,FALSE,FALSE,FALSE,FALSE,FALSE,FALSE,PAT_1516_1765_530.png,FALSE\n"
        "PAT_46,881,False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,3.0,NECK,6.0,5.0,BCC,True,"
        "True,False,True,True,True,PAT_46_881_939.png,True\n"
        "PAT_1545,1867,,,,,77,,,,,,,,FACE,,,ACK,TRUE,UNK,FALSE,FALSE,FALSE,FALSE,PAT_1545_1867_547.png,FALSE")
    put(0, r / "images" / "imgs_part_1" / "PAT_1516_1765_530.png", "PNG")
    put(1, r / "images" / "imgs_part_2" / "PAT_46_881_939.png", "PNG")
    put(2, r / "images" / "imgs_part_3" / "PAT_1545_1867_547.png", "PNG")
    return {"n": 3, "labels": {"melanocytic nevus": 1, "basal cell carcinoma": 1, "actinic keratosis": 1},
            "splits": {"": 3},
            "check": lambda df: df.fitzpatrick.tolist() == ["", "3", ""] and df.sex.iat[1] == "female"
            and df.site.iat[1] == "neck" and df.patient_id.iat[0] == "PAT_1516"}


def ddi(r: Path) -> dict:
    csv(r / "ddi_metadata.csv", ",DDI_ID,DDI_file,skin_tone,malignant,disease\n"
        "0,1,000001.png,56,True,melanoma-in-situ\n1,2,000002.png,12,True,melanoma-in-situ\n"
        "2,3,000003.png,34,False,verruca-vulgaris")
    for k in range(3):
        put(k, r / f"00000{k + 1}.png", "PNG")
    return {"n": 3, "labels": {"melanoma in situ": 2, "verruca vulgaris": 1}, "splits": {"": 3},
            "check": lambda df: df.fitzpatrick_group.tolist() == ["V-VI", "I-II", "III-IV"]
            and (df.fitzpatrick == "").all() and df.malignant.tolist() == ["True", "True", "False"]}


def mednode(r: Path) -> dict:
    base = r / "complete_mednode_dataset"
    put(0, base / "melanoma" / "10058.jpg")
    put(1, base / "melanoma" / "1012.jpg")
    put(2, base / "naevus" / "100078.jpg")
    return {"n": 3, "labels": {"melanoma": 2, "melanocytic nevus": 1}, "splits": {"": 3},
            "check": lambda df: set(df.modality) == {"clinical"}}


def sd198(r: Path) -> dict:
    put(0, r / "images" / "Acne_Keloidalis_Nuchae" / "acne-keloidalis-1.jpg")
    put(1, r / "images" / "Acne_Keloidalis_Nuchae" / "acne-keloidalis-2.jpg")
    put(2, r / "images" / "Basal_Cell_Carcinoma" / "bcc-1.jpg")
    csv(r / "8_2_split" / "train_0.txt", "Acne_Keloidalis_Nuchae/acne-keloidalis-1.jpg 0\nBasal_Cell_Carcinoma/bcc-1.jpg 1")
    csv(r / "8_2_split" / "val_0.txt", "Acne_Keloidalis_Nuchae/acne-keloidalis-2.jpg 0")
    return {"n": 3, "labels": {"acne keloidalis nuchae": 2, "basal cell carcinoma": 1},
            "splits": {"train": 2, "test": 1}}


def acne04(r: Path) -> dict:
    base = r / "Classification"
    for k, name in enumerate(["levle0_1.jpg", "levle2_7.jpg", "levle3_12.jpg"]):
        put(k, base / "JPEGImages" / name)
    csv(base / "NNEW_trainval_0.txt", "levle0_1.jpg 0 3\nlevle3_12.jpg 3 64")
    csv(base / "NNEW_test_0.txt", "levle2_7.jpg 2 25")
    return {"n": 3, "labels": {"acne vulgaris": 3}, "splits": {"train": 2, "test": 1},
            "check": lambda df: df.severity.tolist() == ["0", "3", "2"]
            and df.severity_name.tolist() == ["mild", "very severe", "severe"] and df.lesion_count.iat[1] == "64"}


REPLICAS = {f.__name__: f for f in (isic2016, isic2018, isic2019, isic2020, derm7pt, pad_ufes20, ddi, mednode,
                                     sd198, acne04)}


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_adapter_reads_published_layout(name, tmp_path):
    expect = REPLICAS[name](tmp_path)
    df = build(name, tmp_path)
    assert len(df) == expect["n"] and set(df.source) == {name}
    assert df.labels.value_counts().to_dict() == expect["labels"]
    assert df.split.value_counts().to_dict() == expect["splits"]
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS and not df.image.str.startswith("/").any()
    assert all((tmp_path / p).is_file() for p in df.image)
    assert len(df.attrs["missing_images"]) == expect.get("missing", 0)
    labelled = df[df.labels != ""]
    assert all(set(lab.split(";")) <= set(space.split(";")) for lab, space in zip(labelled.labels, labelled.label_space,
                                                                                    strict=True))
    problems = [p for p in validate_manifest(df) if "split not assigned" not in p.message]
    assert problems == [], problems
    if "check" in expect:
        assert expect["check"](df)
    assert name in DOWNLOADERS


def test_adapters_name_the_bad_file(tmp_path):
    csv(tmp_path / "ddi_metadata.csv", ",DDI_ID,DDI_file,skin_tone,malignant,disease\n0,1,000001.png,78,True,x")
    with pytest.raises(ValueError, match=r"ddi_metadata.csv: row 0 .*skin_tone '78'"):
        build("ddi", tmp_path)
    csv(tmp_path / "Classification" / "NNEW_test_0.txt", "levle0_1.jpg 7 3")
    with pytest.raises(ValueError, match=r"NNEW_test_0.txt: line 1"):
        build("acne04", tmp_path)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        build("pad_ufes20", tmp_path / "nowhere")
    assert set(REPLICAS) <= set(ADAPTERS)
    assert isinstance(pd.DataFrame(), pd.DataFrame)
