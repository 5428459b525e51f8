import stat
import zipfile

import pytest

from jobs.datasets import UnsafeArchive, extract_zip, scan_dataset
from testsupport.images import ODD_FORMAT_FILES, SKIPPED_EXTRAS, class_names, make_image_folder

LIMIT = 10_000_000


def zip_folder(folder, zip_path, prefix=""):
    """Zip every file under folder, with names starting with prefix."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def test_scan_finds_classes_counts_and_odd_formats(image_folder):
    scanned = scan_dataset(image_folder)
    assert scanned.classes == class_names(3)
    first, *others = scanned.classes
    assert scanned.counts == {first: 8 + len(ODD_FORMAT_FILES), **{name: 8 for name in others}}
    assert {f"{first}/{name}" for name in ODD_FORMAT_FILES} <= {image.path for image in scanned.files}
    assert {image.label for image in scanned.files} == {0, 1, 2}
    assert all(image.subset is None for image in scanned.files)


def test_scan_lists_skipped_files_with_reasons(image_folder):
    skipped = {entry["file"]: entry["reason"] for entry in scan_dataset(image_folder).skipped}
    first = class_names(3)[0]
    expected = {path.format(first=first): reason for path, reason in SKIPPED_EXTRAS.items()}
    assert skipped.keys() == expected.keys()
    for path, reason in expected.items():
        assert skipped[path].startswith(reason)


def test_scan_never_follows_a_linked_class_folder(tmp_path):
    make_image_folder(tmp_path / "images", classes=2)
    (tmp_path / "images" / "alias").symlink_to(tmp_path / "images" / "blue")
    scanned = scan_dataset(tmp_path / "images")
    assert scanned.classes == class_names(2)
    assert scanned.skipped == [{"file": "alias", "reason": "symbolic link"}]


def test_scan_hash_is_stable_and_follows_content(tmp_path):
    one = scan_dataset(make_image_folder(tmp_path / "one"))
    two = scan_dataset(make_image_folder(tmp_path / "two"))
    assert one.sha256 == two.sha256
    (tmp_path / "two" / "red" / "image_0.png").rename(tmp_path / "two" / "blue" / "moved.png")
    assert scan_dataset(tmp_path / "two").sha256 != one.sha256


def test_scan_reads_train_and_validation_folders(tmp_path):
    make_image_folder(tmp_path / "train", classes=3, per_class=4)
    make_image_folder(tmp_path / "validation", classes=2, per_class=2)
    scanned = scan_dataset(tmp_path)
    assert scanned.classes == class_names(3)
    assert sum(scanned.counts.values()) == 3 * 4 + 2 * 2
    assert {image.subset for image in scanned.files} == {"train", "validation"}
    assert all(image.path.startswith(image.subset + "/") for image in scanned.files)


def test_extract_returns_the_lone_top_folder(image_folder, tmp_path):
    archive = zip_folder(image_folder, tmp_path / "upload.zip", prefix="holiday photos/")
    root = extract_zip(archive, tmp_path / "extracted", LIMIT)
    assert root == tmp_path / "extracted" / "holiday photos"
    assert scan_dataset(root).classes == class_names(3)


def test_extract_keeps_train_and_validation_at_the_top(tmp_path):
    make_image_folder(tmp_path / "source" / "train", per_class=2)
    archive = zip_folder(tmp_path / "source", tmp_path / "upload.zip")
    assert extract_zip(archive, tmp_path / "extracted", LIMIT) == tmp_path / "extracted"


def unsafe_zip(path, name, content=b"data", mode=None):
    """A zip with one entry called name."""
    entry = zipfile.ZipInfo(name)
    if mode is not None:
        entry.external_attr = mode << 16
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("red/fine.png", b"fine")
        archive.writestr(entry, content, zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize(
    ("name", "mode", "message"),
    [
        ("../evil.png", None, "climbs out"),
        ("red/../../evil.png", None, "climbs out"),
        ("/tmp/evil.png", None, "absolute path"),
        ("C:/evil.png", None, "absolute path"),
        ("red/link.png", stat.S_IFLNK | 0o777, "symbolic link"),
    ],
)
def test_extract_refuses_unsafe_entries_and_writes_nothing(tmp_path, name, mode, message):
    archive = unsafe_zip(tmp_path / "upload.zip", name, mode=mode)
    with pytest.raises(UnsafeArchive, match=message):
        extract_zip(archive, tmp_path / "out" / "extracted", LIMIT)
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.png").exists()


def test_extract_refuses_a_zip_bomb(tmp_path):
    archive = unsafe_zip(tmp_path / "bomb.zip", "red/zeros.png", content=bytes(2_000_000))
    with pytest.raises(UnsafeArchive, match="compression ratio"):
        extract_zip(archive, tmp_path / "extracted", LIMIT)


def test_extract_refuses_archives_over_the_size_limit(image_folder, tmp_path):
    archive = zip_folder(image_folder, tmp_path / "upload.zip")
    with pytest.raises(UnsafeArchive, match="more than the limit"):
        extract_zip(archive, tmp_path / "extracted", 1000)
    assert not (tmp_path / "extracted").exists()


def test_extract_refuses_what_is_not_a_zip(tmp_path):
    (tmp_path / "upload.zip").write_text("just text")
    with pytest.raises(UnsafeArchive, match="not a zip file"):
        extract_zip(tmp_path / "upload.zip", tmp_path / "out" / "extracted", LIMIT)
    assert list((tmp_path / "out").iterdir()) == []
