"""pydicom + numpy side of the DICOM decode benchmark (see run.sh).

File -> float32 HU exactly as a Python pipeline does it:
dcmread, pixel_array (pylibjpeg plugins for compressed syntaxes), apply_modality_lut.
Prints one JSON line per file, like the Rust bench.
"""
import json
import sys
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


def decode(path):
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)


def main():
    iters = int(sys.argv[1])
    for f in sys.argv[2:]:
        hu = decode(f)  # warm-up + checksum
        check = float(hu.astype(np.float64).sum())
        t = time.perf_counter()
        for _ in range(iters):
            decode(f)
        per = (time.perf_counter() - t) / iters
        print(json.dumps({"impl": "pydicom", "file": f, "iters": iters,
                          "ms_per_file": round(per * 1e3, 4),
                          "mvox_per_s": round(hu.size / per / 1e6, 2), "sum": check}))


if __name__ == "__main__":
    main()
