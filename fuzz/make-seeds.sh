#!/usr/bin/env bash
# Seed corpora for the fuzz targets, from the real test files (testdata/real-imaging) and a
# synthetic CT slice; written to fuzz/corpus/<target>/ (git-ignored). docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")"
data=../testdata/real-imaging
mkdir -p corpus/dicom_instance corpus/nifti corpus/zip_upload corpus/dimse_command
# DICOM: every real test file under 1 MiB (all transfer syntaxes of the test set).
find "$data/dicom" -name '*.dcm' -size -1024k -exec cp {} corpus/dicom_instance/ \;
# NIfTI: the small real files, gzipped and plain.
find "$data/nifti" \( -name '*.nii' -o -name '*.nii.gz' \) -size -1024k -exec cp {} corpus/nifti/ \;
# Zips of a few real instances (stored and deflated), and one with a traversal name.
python3 - <<'PY'
import zipfile, glob, os
files = sorted(glob.glob("../testdata/real-imaging/dicom/series-ct-head-16px/*.dcm"))
for i, method in enumerate([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]):
    with zipfile.ZipFile(f"corpus/zip_upload/series{i}.zip", "w", method) as z:
        for f in files:
            z.write(f, "study/" + os.path.basename(f))
        z.writestr("README.txt", "not dicom")
with zipfile.ZipFile("corpus/zip_upload/traversal.zip", "w") as z:
    z.writestr("../../evil.dcm", "x")
# DIMSE command sets (Implicit VR Little Endian): C-ECHO-RQ and C-STORE-RQ.
import struct
def el(g, e, v):
    if isinstance(v, int):
        v = struct.pack("<H", v)
    elif isinstance(v, str):
        v = v.encode() + (b"\0" if len(v) % 2 else b"")
    return struct.pack("<HHI", g, e, len(v)) + v
def cmd(*els):
    body = b"".join(els)
    return el(0, 0, struct.pack("<I", len(body))) + body
open("corpus/dimse_command/echo", "wb").write(cmd(el(0, 2, "1.2.840.10008.1.1"), el(0, 0x100, 0x30), el(0, 0x110, 1), el(0, 0x800, 0x101)))
open("corpus/dimse_command/store", "wb").write(cmd(el(0, 2, "1.2.840.10008.5.1.4.1.1.2"), el(0, 0x100, 1), el(0, 0x110, 7), el(0, 0x700, 0), el(0, 0x800, 0), el(0, 0x1000, "1.2.3.4")))
PY
for t in corpus/*; do echo "$t: $(ls "$t" | wc -l) seeds"; done
