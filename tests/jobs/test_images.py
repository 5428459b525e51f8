import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from jobs.datasets import scan_dataset
from jobs.images import decode_image, load_uint8_images
from testsupport.images import CLASS_COLOURS, sixteen_bit_grey


def test_loads_every_image_in_file_order(image_folder, tmp_path):
    scanned = scan_dataset(image_folder)
    images = load_uint8_images(scanned.root, scanned.files, 16, tmp_path / "cache", scanned.sha256)
    assert images.shape == (len(scanned.files), 16, 16, 3)
    assert images.dtype == np.uint8
    for index, image_file in enumerate(scanned.files):
        if image_file.path.endswith("image_0.png"):
            colour = CLASS_COLOURS[scanned.classes[image_file.label]]
            assert np.abs(images[index].mean(axis=(0, 1)) - colour).max() < 10


def test_second_load_reuses_the_cache_without_decoding(image_folder, tmp_path):
    scanned = scan_dataset(image_folder)
    first = np.array(load_uint8_images(scanned.root, scanned.files, 32, tmp_path / "cache", scanned.sha256))
    (cache_file,) = (tmp_path / "cache").glob("*.npy")
    written = cache_file.stat().st_mtime_ns
    shutil.rmtree(image_folder)
    again = load_uint8_images(scanned.root, scanned.files, 32, tmp_path / "cache", scanned.sha256)
    np.testing.assert_array_equal(again, first)
    assert cache_file.stat().st_mtime_ns == written


def test_concurrent_loads_build_the_cache_once(image_folder, tmp_path):
    scanned = scan_dataset(image_folder)
    results = []

    def load():
        results.append(load_uint8_images(scanned.root, scanned.files, 24, tmp_path / "cache", scanned.sha256))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == [
        f"{scanned.sha256}-24px.npy"
    ]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    sixteen_bit_grey(32).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = decode_image(tmp_path / "deep.png", 32)
    expected = np.rint(np.asarray(sixteen_bit_grey(32), dtype=np.float64) / 257)
    np.testing.assert_array_equal(pixels[..., 0], expected)
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA"])
def test_every_mode_decodes_to_rgb(tmp_path, mode):
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode).save(path)
    pixels = decode_image(path, 4)
    assert pixels.shape == (4, 4, 3) and pixels.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (decode_image(tmp_path / "clear.png", 8) == 255).all()
