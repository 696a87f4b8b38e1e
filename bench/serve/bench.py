#!/usr/bin/env python3
"""Service overhead benchmark (docs/BENCHMARKS.md, "The triage service").

Scores the same synthetic DICOM studies twice on one machine:
  1. `hemorrhagenet predict --manifest` alone (read + score + write results, DICOM results on);
  2. `hemorrhagenet serve`: each study sent by dcmtk's storescu, timed from the moment the last
     instance is acknowledged to the moment GET /v1/studies/{id} says done (SR written), one
     study at a time (latency), then all studies at once (throughput).
The study timeout (the wait for more instances) is set to --timeout and reported separately:
latency - timeout is the service's own work. Needs a release build, dcmtk and a model folder.

  python3 bench/serve/bench.py --bin target/release/hemorrhagenet --model hn-demo/run/model \
      --studies 12 --size 256 --slices 32 --timeout 1
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, urllib.request


def sh(*a, **k):
    return subprocess.run(a, check=True, capture_output=True, text=True, **k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--studies", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hn-serve-bench-")
    cohort = os.path.join(tmp, "cohort")
    sh(a.bin, "synth", "--out", cohort, "--studies", str(a.studies), "--seed", str(a.seed),
       "--size", str(a.size), "--slices", str(a.slices))
    ids = sorted(os.listdir(os.path.join(cohort, "studies")))
    dirs = [os.path.join(cohort, "studies", i, "dicom") for i in ids]
    manifest = os.path.join(tmp, "manifest.csv")
    with open(manifest, "w") as f:
        f.write("study_key,path\n" + "".join(f"{i},{d}\n" for i, d in zip(ids, dirs)))

    # 1. predict alone.
    t = time.perf_counter()
    sh(a.bin, "predict", "--manifest", manifest, "--model", a.model, "--out",
       os.path.join(tmp, "pred"), "--dicom")
    predict_s = (time.perf_counter() - t) / len(ids)

    # 2. the service.
    p = subprocess.Popen([a.bin, "serve", "--model", a.model, "--data", os.path.join(tmp, "data"),
                          "--http", "127.0.0.1:0", "--dicom", "127.0.0.1:0",
                          "--study-timeout", str(a.timeout)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = json.loads(p.stdout.readline())
    http, port = addr["http"], addr["dicom"].rsplit(":", 1)[1]

    def uid_of(d):
        out = sh("dcmdump", "+P", "0020,000d", os.path.join(d, sorted(os.listdir(d))[0])).stdout
        return out.split("[", 1)[1].split("]", 1)[0]

    def status(uid):
        try:
            with urllib.request.urlopen(f"http://{http}/v1/studies/{uid}") as r:
                return json.load(r)["status"]
        except Exception:
            return None

    def send(d):
        sh("storescu", "-aec", "HNET", "+sd", "+r", "127.0.0.1", port, d)

    def wait(uid):
        while status(uid) != "done":
            time.sleep(0.01)

    uids = [uid_of(d) for d in dirs]
    # Warm-up (first scoring allocates), not timed.
    send(dirs[0]); wait(uids[0])
    lat = []
    for d, u in list(zip(dirs, uids))[1:]:
        send(d)
        t = time.perf_counter()
        wait(u)
        lat.append(time.perf_counter() - t)
    # Throughput: every study again at once (each is rescored: new instances arrived).
    t = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", "HNET", "+sd", "+r", "127.0.0.1", port, d],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for d in dirs]
    for q in procs:
        q.wait()
    time.sleep(a.timeout + 0.5)
    def all_done():
        return all(status(u) == "done" for u in uids)
    while not all_done():
        time.sleep(0.05)
    burst_s = time.perf_counter() - t
    p.terminate(); p.wait()
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(round(x * (len(lat) - 1))))]
    r = {
        "studies": len(ids), "grid_input": f"{a.size}x{a.size}x{a.slices}", "study_timeout_s": a.timeout,
        "predict_s_per_study": round(predict_s, 3),
        "predict_studies_per_min": round(60 / predict_s, 1),
        "serve_latency_p50_s": round(q(0.5), 3), "serve_latency_p99_s": round(q(0.99), 3),
        "serve_overhead_p50_s": round(q(0.5) - a.timeout - predict_s, 3),
        "serve_burst_studies_per_min": round(60 * len(ids) / burst_s, 1),
        "serve_vs_predict_throughput": round((60 * len(ids) / burst_s) / (60 / predict_s), 2),
    }
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
