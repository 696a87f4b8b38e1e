"""Whole-series benchmark helper (see series.sh).

`make DIR N`: write an N-slice series made of 693_UNCR.dcm with distinct positions and
SOP Instance UIDs, under file names in scrambled order.
`time DIR ITERS`: pydicom+numpy reading the folder into a sorted float32 HU volume, best of ITERS.
"""
import glob
import json
import sys
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


def make(out, n):
    ds = pydicom.dcmread("testdata/real-imaging/dicom/693_UNCR.dcm")
    for k in range(n):
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 2.5 * k]
        ds.SOPInstanceUID = "2.25.%d" % (1000 + k)
        ds.InstanceNumber = k + 1
        ds.save_as("%s/s%03d.dcm" % (out, (k * 37) % n))


def read(folder):
    dss = [pydicom.dcmread(f) for f in sorted(glob.glob(folder + "/*.dcm"))]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([apply_modality_lut(d.pixel_array, d).astype(np.float32) for d in dss])


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        best = float("inf")
        for _ in range(int(sys.argv[3])):
            t = time.perf_counter()
            vol = read(sys.argv[2])
            best = min(best, time.perf_counter() - t)
        print(json.dumps({"impl": "pydicom", "file": sys.argv[2], "ms": round(best * 1e3, 1),
                          "sum": float(vol.astype(np.float64).sum())}))
