"""Detection data as files: a folder (or a zip of one) holding ``images/`` and one COCO-style
JSON file of boxes (``annotations.json``, ``instances_val2017.json``, ...).

The JSON is read as data: ``images`` (``id``, ``file_name``; ``width`` / ``height`` optional,
else read from the file), ``annotations`` (``image_id``, ``bbox`` as ``[x, y, width, height]``
in pixels, ``category_id``; ``iscrowd`` boxes left out, as COCO's evaluation leaves them out of
the counted ones) and optionally ``categories`` (``id``, ``name``). Images are resized bilinearly
to the model's input size and their boxes scaled with them. Labels are the category ids as they
are (torchvision's detectors number their classes from 1, 0 being the background).

The boxes are kept as one tensor ``y`` of shape N x M x 5, rows ``x1, y1, x2, y2, label`` (M the
most boxes of an image; padding has label -1): ``datasets.is_boxes`` tells it from label masks.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import FileError, first_line
from core.sources.readers import check_image_args, read_images

MAX_JSON_BYTES = 512 << 20  # a COCO val2017 instances file is about 25 MB
MAX_BOXES_PER_IMAGE = 1000


def box_layout(path: str | Path) -> tuple[Path, Path] | None:
    """``(images folder, JSON file)`` when ``path`` is a folder laid out for detection: an
    ``images/`` folder and exactly one ``.json`` file beside it (nothing else but hidden files);
    else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    shown = [f for f in p.iterdir() if not f.name.startswith((".", "__MACOSX"))]
    jsons = [f for f in shown if f.is_file() and f.suffix.lower() == ".json"]
    dirs = [f.name for f in shown if f.is_dir()]
    return (p / "images", jsons[0]) if dirs == ["images"] and len(jsons) == 1 and len(shown) == 2 else None


def _load(path: Path) -> dict:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise FileError(f"{path.name} is {path.stat().st_size >> 20} MiB; boxes files up to "
                        f"{MAX_JSON_BYTES >> 20} MiB are read")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileError(f"{path.name} is not JSON ({first_line(exc)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise FileError(f"{path.name}: a COCO-style file is an object with lists 'images' (id, file_name) and "
                        "'annotations' (image_id, bbox [x, y, width, height], category_id)")
    return data


def _number(v, what: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) > 1e7:
        raise FileError(f"{where}: {what} must be a number, got {str(v)[:40]!r}")
    return float(v)


def _boxes_of(data: dict, name: str) -> dict:
    """image id -> list of (x1, y1, x2, y2, label) in the image's own pixels."""
    out: dict = {}
    for i, a in enumerate(data["annotations"]):
        where = f"{name}: annotation {i}"
        if not isinstance(a, dict) or "image_id" not in a or "bbox" not in a or "category_id" not in a:
            raise FileError(f"{where} needs image_id, bbox [x, y, width, height] and category_id")
        if a.get("iscrowd"):
            continue
        b = a["bbox"]
        if not isinstance(b, list) or len(b) != 4:
            raise FileError(f"{where}: bbox must be [x, y, width, height], got {str(b)[:60]}")
        x, y, w, h = (_number(v, "bbox", where) for v in b)
        label = a["category_id"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 100_000:
            raise FileError(f"{where}: category_id must be an integer 0..99999, got {str(label)[:40]!r}")
        if w <= 0 or h <= 0:
            continue  # a degenerate box finds nothing and is found by nothing
        out.setdefault(a["image_id"], []).append((x, y, x + w, y + h, float(label)))
    return out


def read_box_folder(path: str | Path, size: tuple[int, int], channels: int, mean, std):
    """``(x, y, classes)``: images ``(N, channels, H, W)`` normalised as :func:`read_images` does,
    their boxes ``y`` (N x M x 5, ``datasets.is_boxes``) scaled to H x W, and class names by label
    (the JSON's category names, "0".. for ids it does not name), of a folder with the
    :func:`box_layout`.

    Raises:
        FileError: not that layout; a JSON that is not COCO-style; an image it lists that is not
            in images/; an image that does not decode."""
    import torch
    from PIL import Image

    h, w = check_image_args(size, channels, mean, std)
    found = box_layout(path)
    if found is None:
        raise FileError(f"detection data {str(path)!r}: accepted is a folder (or .zip) holding images/ and one "
                        "COCO-style .json of boxes")
    folder, jfile = found
    data = _load(jfile)
    entries = [im for im in data["images"] if isinstance(im, dict) and "id" in im and "file_name" in im]
    if len(entries) != len(data["images"]) or not entries:
        raise FileError(f"{jfile.name}: every entry of 'images' needs id and file_name (and there must be one)")
    files = [folder / str(im["file_name"]) for im in entries]
    inside = [f for f in files if f.resolve().is_relative_to(folder.resolve()) and f.is_file()]
    if len(inside) != len(files):
        missing = [im["file_name"] for im, f in zip(entries, files) if f not in inside]
        raise FileError(f"{jfile.name} lists images not in images/: {', '.join(map(str, missing[:6]))}"
                        f"{' ...' if len(missing) > 6 else ''}")
    boxes = _boxes_of(data, jfile.name)
    x = read_images(Path(path).name, files, channels, (h, w), mean, std, root=Path(path))
    most = min(MAX_BOXES_PER_IMAGE, max([len(boxes.get(im["id"], [])) for im in entries] + [1]))
    y = torch.full((len(entries), most, 5), -1.0)
    for k, (im, f) in enumerate(zip(entries, files)):
        got = boxes.get(im["id"], [])[:most]
        if not got:
            continue
        if isinstance(im.get("width"), int) and isinstance(im.get("height"), int) and im["width"] > 0 < im["height"]:
            w0, h0 = im["width"], im["height"]
        else:
            with Image.open(f) as pic:
                w0, h0 = pic.size
        t = torch.tensor(got)
        t[:, [0, 2]] *= w / w0
        t[:, [1, 3]] *= h / h0
        y[k, :len(got)] = t
    names = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories") or []
             if isinstance(c, dict) and isinstance(c.get("id"), int) and 0 <= c["id"] < 100_000}
    top = max([int(y[..., 4].max()) if y.numel() else 0, *names]) + 1
    return x, y, [names.get(i, str(i)) for i in range(top)]


__all__ = ["box_layout", "read_box_folder", "MAX_BOXES_PER_IMAGE"]
