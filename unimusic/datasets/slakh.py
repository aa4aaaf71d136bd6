"""Slakh2100 (the ``slakh2100_flac_redux`` release): multitrack audio rendered from Lakh MIDI.

Layout (https://zenodo.org/records/4599666; the folder tree and ``metadata.yaml``
fields as documented in https://github.com/ethman/slakh-utils)::

    slakh2100_flac_redux/
        train/ validation/ test/ omitted/
            TrackNNNNN/
                mix.flac          the sum of the rendered stems (mono, 44.1 kHz, 16-bit)
                all_src.mid       the original Lakh MIDI (every source): not read
                metadata.yaml     UUID, lmd_midi_dir, stems: {SNN: inst_class, is_drum,
                                  midi_program_name, program_num, audio_rendered,
                                  midi_saved, plugin_name, integrated_loudness}
                MIDI/SNN.mid      one MIDI file per stem
                stems/SNN.flac    one audio file per stem: not read

Rows: the mix with the notes of every stem whose audio was rendered (a stem with
``audio_rendered: false`` is not in the mix, so its notes are left out, and listed
in the example meta). Each note takes its instrument from metadata.yaml:
``program_num`` (drum stems, ``is_drum: true``, have ``program_num: 128``: their
notes are drums, program 0). The example meta keeps the stem list (ids, programs,
classes, names, flags); ``work`` is the Lakh UUID, so tracks rendered from the same
MIDI (Slakh2100-orig has such duplicates) stay together.

Splits: the folder a track sits in (train / validation -> val / test). Tracks in
``omitted/`` (redux's duplicates of other tracks' MIDI) are excluded: counted by
:func:`scan_tracks`, returned neither as examples nor as errors.

Scan errors: a track without ``mix.*`` or ``metadata.yaml``, an unreadable
metadata.yaml, a stem metadata calls saved (``midi_saved: true``) whose MIDI file
is missing. A stem with ``midi_saved: false`` and no file is fine.

Certain: the tree and file names (mirdata's slakh_index_2100-redux sample index, which
also shows a stem with MIDI but no audio), the metadata fields, mono 44.1 kHz audio and
the mix being the sum of the stems (slakh-utils README), drums as ``program_num: 128``
(mirdata's test metadata.yaml). Assumed, so tolerated: SRC may be the release folder, its parent or any prefix
holding track folders; ``.wav`` audio (babyslakh) is read like ``.flac``; a track
folder not under a split folder gets the stable hashed split; a missing
``audio_rendered`` / ``midi_saved`` flag means true / "saved if the file exists".
Licence: CC BY 4.0 (the Zenodo record, as mirdata's Slakh loader records it).
"""

from __future__ import annotations

import dataclasses

from unimusic.datasets.base import DatasetInfo, Example, ImportConfig, base_row, hashed_split, make_example, \
    official_split, performance_rows, read_audio, read_midi_notes, scan_error
from unimusic.errors import InputError

OMITTED = "omitted"
SPLIT_FOLDERS = ("train", "validation", "test")
AUDIO = (".flac", ".wav")

INFO = DatasetInfo(
    name="slakh2100",
    title="Slakh2100 (Synthesized Lakh), flac_redux release",
    licence="CC BY 4.0",
    commercial_use=True,
    homepage="https://www.slakh.com/",
    modalities=("midi", "audio"),
    splits="the folder of each track: train / validation / test (omitted/ is excluded)",
    layout="the slakh2100_flac_redux folder (train/, validation/, test/, omitted/ of TrackNNNNN/ folders) or its "
           "parent",
    citation="Manilow, Wichern, Seetharaman and Le Roux, Cutting Music Source Separation Some Slakh: A Dataset "
             "to Study the Impact of Training Data Quality and Quantity, WASPAA 2019",
)


@dataclasses.dataclass(frozen=True)
class TrackScan:
    examples: list
    errors: list
    omitted: int  # tracks under omitted/, left out


def _split(path: str) -> list[str]:
    return path.rstrip("/").split("/")


def _stems(data: bytes, *, source: str) -> tuple[dict, list[dict]]:
    """metadata.yaml -> (its top-level fields, the checked stem list)."""
    import yaml

    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(source, f"unreadable metadata.yaml ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stems"), dict):
        raise InputError(source, "metadata.yaml has no 'stems' mapping")
    stems = []
    for sid, s in sorted(doc["stems"].items()):
        s = s if isinstance(s, dict) else {}
        drum, program = s.get("is_drum"), s.get("program_num")
        if drum not in (True, False) or not isinstance(program, int) or isinstance(program, bool):
            raise InputError(source, f"stem {sid}: is_drum {drum!r} / program_num {program!r} missing or not "
                                     f"a bool / an integer")
        if not drum and not 0 <= program <= 127:
            raise InputError(source, f"stem {sid}: program_num {program} outside 0..127")
        stems.append({"id": str(sid), "program": 0 if drum else program, "program_num": program, "is_drum": drum,
                      "class": s.get("inst_class"), "name": s.get("midi_program_name"),
                      "plugin": s.get("plugin_name"), "audio_rendered": s.get("audio_rendered", True) is not False,
                      "midi_saved": s.get("midi_saved")})
    return doc, stems


def scan_tracks(root: str) -> TrackScan:
    """Every track folder under ``root``: examples, scan errors and the omitted count."""
    from concurrent.futures import ThreadPoolExecutor

    from unimusic import storage

    tracks: dict[str, dict] = {}  # track folder -> {name: path}
    for path in storage.list_files(root, suffixes=(*AUDIO, ".mid", ".midi", ".yaml")):
        parts = _split(path)
        if len(parts) >= 3 and parts[-2] in ("MIDI", "stems"):
            folder, name = "/".join(parts[:-2]), f"{parts[-2]}/{parts[-1]}"
        elif parts[-1] == "metadata.yaml" or parts[-1].rsplit(".", 1)[0] in ("mix", "all_src"):
            folder, name = "/".join(parts[:-1]), parts[-1]
        else:
            continue
        tracks.setdefault(folder, {})[name] = path
    if not tracks:
        raise InputError(root, "not a Slakh folder: no track folders (TrackNNNNN/metadata.yaml, mix.flac) found")
    omitted = [f for f in tracks if _split(f)[-2:-1] == [OMITTED]]
    kept = sorted(f for f in tracks if f not in omitted)
    with ThreadPoolExecutor(max_workers=8) as pool:  # many small reads: S3 latency, not bandwidth
        docs = list(pool.map(_read_or_error, [tracks[f].get("metadata.yaml") for f in kept]))
    examples, errors = [], []
    for folder, (data, problem) in zip(kept, docs, strict=True):
        files, key = tracks[folder], _split(folder)[-1]
        parent = (_split(folder)[-2:-1] or [""])[0]
        mix = next((files[f"mix{s}"] for s in AUDIO if f"mix{s}" in files), None)
        if data is None:
            errors.append(scan_error(files.get("metadata.yaml") or storage.join(folder, "metadata.yaml"),
                                     problem or "missing: the track folder has no metadata.yaml"))
            continue
        if mix is None:
            errors.append(scan_error(storage.join(folder, "mix.flac"), "missing: the track folder has no mix"))
            continue
        try:
            doc, stems = _stems(data, source=files["metadata.yaml"])
        except InputError as exc:
            errors.append(scan_error(exc.source, exc.problem))
            continue
        midi = {s["id"]: files.get(f"MIDI/{s['id']}.mid") or files.get(f"MIDI/{s['id']}.midi") for s in stems}
        lost = [s["id"] for s in stems if s["midi_saved"] is True and midi[s["id"]] is None]
        if lost:
            errors.append(scan_error(storage.join(folder, "MIDI", f"{lost[0]}.mid"),
                                     f"missing: metadata.yaml says stem(s) {lost} were saved"))
            continue
        used = {f"midi:{s['id']}": midi[s["id"]] for s in stems if s["audio_rendered"] and midi[s["id"]]}
        work = str(doc.get("UUID") or key)
        split = official_split(parent, source=folder) if parent in SPLIT_FOLDERS else hashed_split(work)
        meta = {"track": key, "uuid": doc.get("UUID"), "lmd_midi_dir": doc.get("lmd_midi_dir"), "stems": stems,
                "stems_in_rows": sorted(k.split(":", 1)[1] for k in used)}
        examples.append(make_example(key, split, {"mix": mix, "metadata": files["metadata.yaml"], **used}, meta,
                                     work=work))
    return TrackScan(examples=examples, errors=errors, omitted=len(omitted))


def _read_or_error(path: str | None) -> tuple[bytes | None, str]:
    """The file's bytes, or None and why (recorded as a scan error, not raised: one bad track)."""
    from unimusic import storage

    if path is None:
        return None, ""
    try:
        return storage.read_bytes(path), ""
    except InputError as exc:
        return None, exc.problem


class SlakhAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        found = scan_tracks(root)
        return found.examples, found.errors

    def excluded(self, root: str) -> dict:
        """Tracks left out by design, for the manifest: ``{"omitted": n}``."""
        return {"omitted": scan_tracks(root).omitted}

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        mix = example.require("mix")
        stems = {s["id"]: s for s in example.meta_dict.get("stems", [])}
        notes = []
        for role, path in example.files:
            if not role.startswith("midi:"):
                continue
            stem = stems.get(role.split(":", 1)[1])
            if stem is None:
                raise InputError(path, f"stem {role} is not in the example's metadata")
            notes += [dataclasses.replace(n, program=stem["program"], is_drum=stem["is_drum"])
                      for n in read_midi_notes(path)]
        audio = read_audio(mix, sample_rate=config.sample_rate, max_seconds=config.max_example_seconds)
        row = base_row(self.info, example, config, source=mix)
        return performance_rows(row, notes=notes, audio=audio, config=config, source=mix)


ADAPTER = SlakhAdapter()
