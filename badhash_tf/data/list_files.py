"""The paper's list-file datasets (ImageNet-100, NUS-WIDE, MS-COCO as the release ships them).

A dataset root holds `<split>_img.txt` (one image path per line, relative to the root) and
`<split>_label.txt` (one space-separated multi-hot row per line). The release names the
query split `test`; `query` is read from `test_*.txt` when `query_*.txt` is absent.
Everything is checked before any training starts, and every error names the file and line.
"""

import concurrent.futures
import os
import re

import numpy as np
import tensorflow as tf
from PIL import Image

# Leading bytes of the formats tf.io.decode_image reads.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_SPLIT_ALIASES = {"query": ("query", "test"), "test": ("test", "query")}


def list_file_paths(root, split):
    """-> (image list path, label list path) for `split`, trying the release's aliases."""
    for name in _SPLIT_ALIASES.get(split, (split,)):
        img = os.path.join(root, f"{name}_img.txt")
        if os.path.exists(img):
            return img, os.path.join(root, f"{name}_label.txt")
    raise FileNotFoundError(
        f"no list file for split {split!r}: expected {os.path.join(root, split + '_img.txt')}")


def _read_lines(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: list file not found")
    with open(path, "rb") as f:
        raw = f.read().split(b"\n")
    lines = []
    for lineno, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte "
                             f"{e.start}); list files are UTF-8") from None
    while lines and not lines[-1].strip():  # a trailing blank line is not an item
        lines.pop()
    return lines


def _parse_labels(label_file, rows, num_classes):
    width = num_classes
    labels = []
    for lineno, row in enumerate(rows, start=1):
        try:
            values = [float(v) for v in row.split()]
        except ValueError:
            raise ValueError(f"{label_file}:{lineno}: label row {row!r} is not numeric") from None
        if width is None:
            width = len(values)
        if len(values) != width or width == 0:
            raise ValueError(f"{label_file}:{lineno}: label row has {len(values)} values, "
                             f"expected {width}")
        bad = [v for v in values if v not in (0.0, 1.0)]  # NaN, inf, negative, 0.5, 2 ...
        if bad:
            raise ValueError(f"{label_file}:{lineno}: label value {bad[0]!r} is not 0 or 1 "
                             "(rows are multi-hot)")
        if not any(values):
            raise ValueError(f"{label_file}:{lineno}: label row has no label (all zeros): "
                             "such an item is relevant to nothing and scores 0 as a query")
        labels.append(values)
    return np.asarray(labels, np.float32)


def _check_image(root_real, img_file, lineno, rel_path):
    path = rel_path if os.path.isabs(rel_path) else os.path.join(root_real, rel_path)
    real = os.path.realpath(path)
    if os.path.commonpath([root_real, real]) != root_real:
        raise ValueError(f"{img_file}:{lineno}: image path {rel_path!r} escapes the dataset "
                         f"root {root_real}")
    if os.path.isdir(real):
        raise ValueError(f"{img_file}:{lineno}: image path {rel_path!r} is a directory "
                         f"({real}), not an image file")
    if not os.path.isfile(real):
        raise FileNotFoundError(f"{img_file}:{lineno}: image {rel_path!r} not found ({real})")
    with open(real, "rb") as f:
        head = f.read(8)
    if not head.startswith(_IMAGE_MAGIC):
        raise ValueError(f"{img_file}:{lineno}: image {rel_path!r} is not a JPEG, PNG, GIF or "
                         f"BMP file and cannot be decoded")
    return real


def decode_image(data):
    """Encoded image bytes (scalar string tensor) -> uint8 [H, W, 3]: the decoder training
    reads list-file images with, and the start-up check too, so a file the check passes is
    a file training can read."""
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def _decode_fully(img_file, lineno, rel_path, real):
    """Decodes the whole image with PIL (a file with valid leading bytes may still be
    truncated) and with training's decoder (`decode_image`: TensorFlow refuses some files
    PIL reads, e.g. 1-bit BMPs). Raises ValueError naming the list file and line."""
    try:
        with Image.open(real) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{img_file}:{lineno}: image {rel_path!r} cannot be decoded whole "
                         f"({e})") from None
    try:
        decode_image(tf.io.read_file(real))
    except tf.errors.OpError as e:
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message.splitlines()[0]).strip(" :")
        raise ValueError(f"{img_file}:{lineno}: image {rel_path!r} cannot be read by "
                         f"training's decoder, tf.io.decode_image ({reason}); convert it to "
                         "8-bit RGB or greyscale PNG/JPEG") from None


_VERIFIED = set()  # (list file, its size and mtime) whose images decoded whole here


def _decode_all(img_file, paths, checked):
    """Every image of a list file decoded once per process (a thread pool; PIL decodes
    outside the GIL), re-done when the list file changes."""
    stat = os.stat(img_file)
    key = (os.path.realpath(img_file), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    jobs = [(img_file, i, p.strip(), real) for i, (p, real) in enumerate(zip(paths, checked), 1)]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for _ in pool.map(lambda job: _decode_fully(*job), jobs):
            pass
    _VERIFIED.add(key)


def read_list_split(root, split, num_classes=None):
    """Reads and checks one split -> (absolute image paths [N], multi-hot labels [N, C] float32).

    Raises FileNotFoundError / ValueError naming the file and line for a missing list or
    image, an image that does not decode whole (every one is decoded, once per process), a
    label row of the wrong width, not 0/1 or all zeros, a list file that is not UTF-8, a
    line-count mismatch, an empty split, or a path that escapes `root`.
    """
    img_file, label_file = list_file_paths(root, split)
    paths, rows = _read_lines(img_file), _read_lines(label_file)
    if not paths:
        raise ValueError(f"{img_file}: split {split!r} is empty")
    if len(paths) != len(rows):
        raise ValueError(f"{img_file} has {len(paths)} lines but {label_file} has {len(rows)}")
    labels = _parse_labels(label_file, rows, num_classes)
    root_real = os.path.realpath(root)
    checked = [_check_image(root_real, img_file, i, p.strip()) for i, p in enumerate(paths, 1)]
    _decode_all(img_file, paths, checked)
    return checked, labels
