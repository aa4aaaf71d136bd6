"""A contact sheet for eyeballing alignment: random corpus rows, each system crop
above its LMX engraved back by Verovio (same width), with the row's facts."""

from __future__ import annotations

import random
from pathlib import Path


def read_rows(out_dir: str, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    from unimusic import storage

    rows: list[dict] = []
    for path in storage.list_files(storage.join(out_dir, "shards"), suffixes=(".parquet",)):
        fs, inner = storage.filesystem(path)
        rows.extend(pq.read_table(inner, filesystem=fs, columns=columns).to_pylist())
    return rows


def _fit_width(image, width: int):
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def write_contact_sheet(out_dir: str, png_path: str | Path, *, count: int = 6, seed: int = 0, width: int = 1000) -> Path:
    import cv2
    import numpy as np

    from unimusic.errors import InputError
    from unimusic.render.engrave import EngraveOptions, engrave_svg_pages, svg_to_png
    from unimusic.render.lmx import delinearize
    from unimusic.tokens.lmx import LmxCodec

    rows = read_rows(out_dir, ["piece_id", "system", "occurrence", "image_png", "lmx", "start", "end", "split"])
    if not rows:
        raise InputError(out_dir, "no corpus rows to draw")
    chosen = random.Random(seed).sample(rows, min(count, len(rows)))
    codec = LmxCodec()
    tiles = []
    for row in chosen:
        crop = cv2.imdecode(np.frombuffer(row["image_png"], np.uint8), cv2.IMREAD_GRAYSCALE)
        tokens, _ = codec.decode(row["lmx"])
        xml, _ = delinearize(tokens)
        svg = engrave_svg_pages(xml, options=EngraveOptions(page_width=2600, scale=35))[0]
        engraved = cv2.imdecode(np.frombuffer(svg_to_png(svg), np.uint8), cv2.IMREAD_GRAYSCALE)
        label = np.full((28, width), 255, np.uint8)
        text = f"{row['piece_id']}  system {row['system']}.{row['occurrence']}  {row['start']:.2f}-{row['end']:.2f} s  [{row['split']}]"
        cv2.putText(label, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 0, 1, cv2.LINE_AA)
        rule = np.full((6, width), 160, np.uint8)
        tiles += [label, _fit_width(crop, width), _fit_width(engraved, width), rule]
    sheet = np.vstack(tiles)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png_path), sheet)
    return png_path
