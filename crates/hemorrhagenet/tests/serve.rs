//! `hemorrhagenet serve` end to end, with clients nobody here wrote: dcmtk's `echoscu` and
//! `storescu` send studies to the node, dcmtk's `storescp` is the PACS results are forwarded
//! to, dicomweb-client (PyPI) stores instances by STOW-RS; malformed requests, limits,
//! authentication, and `kill -9` at the worst moments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{
    SENTINEL_ID, SENTINEL_NAME, dicom_text, save_tiny_model, study_uid, tool_missing, write_dicom,
};

/// A running service; killed when dropped.
struct Server {
    child: Child,
    http: String,
    dicom_port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(model: &Path, data: &Path, log: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
        .args(["serve", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(["--http", "127.0.0.1:0", "--dicom", "127.0.0.1:0"])
        .args(extra)
        .env("HEMORRHAGENET_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("start hemorrhagenet serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "serve did not start ({e}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    let dicom = v["dicom"].as_str().unwrap();
    Server {
        child,
        http: v["http"].as_str().unwrap().to_string(),
        dicom_port: dicom.rsplit(':').next().unwrap().parse().unwrap(),
        log: log.to_path_buf(),
    }
}

/// A minimal HTTP/1.1 client (one request per connection): status, headers, body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (s, _, b) = http(addr, "GET", path, &[], b"");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Poll a study until `pred` holds on its status document.
fn wait_for(addr: &str, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let (_, v) = get_json(addr, &format!("/v1/studies/{id}"));
        if pred(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "study {id} did not get there in {secs} s: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn done(v: &Value) -> bool {
    v["status"] == "done"
}

fn storescu(port: u16, dir: &Path) {
    let o = Command::new("storescu")
        .args([
            "-aet",
            "CTSCANNER",
            "-aec",
            "HNET",
            "+sd",
            "+r",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .arg(dir)
        .output()
        .unwrap_or_else(|_| tool_missing("storescu (dcmtk)"));
    assert!(
        o.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("E:"), "storescu: {err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// No patient identifier and no study UID in the service's log.
fn assert_clean_log(log: &Path, uids: &[String]) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("scoring"), "the log is empty? {text}");
    for needle in ["SENTINEL", SENTINEL_ID, SENTINEL_NAME]
        .into_iter()
        .map(String::from)
        .chain(uids.iter().cloned())
    {
        assert!(
            !text.contains(&needle),
            "{needle} in the service log:\n{text}"
        );
    }
}

/// The DICOM node: C-ECHO, C-STORE of a study from storescu, clinical data before the
/// images, scoring, the SR and overlays forwarded to a PACS (dcmtk storescp) with the source's
/// StudyInstanceUID, the worklist (JSON and page), metrics, rescoring on new clinical data
/// with the same SR UID, and a clean log.
#[test]
fn dicom_node_scores_a_study_and_forwards_the_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    write_dicom(&root.join("s1"), 1);
    let pacs_dir = root.join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = free_port();
    let mut pacs = Command::new("storescp")
        .args(["-aet", "PACS", "-od"])
        .arg(&pacs_dir)
        .arg(pacs_port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|_| tool_missing("storescp (dcmtk)"));
    let log = root.join("serve.log");
    let fwd = format!("PACS@127.0.0.1:{pacs_port}");
    let srv = start(
        &root.join("model"),
        &root.join("data"),
        &log,
        &["--study-timeout", "2", "--forward", &fwd],
    );
    let o = Command::new("echoscu")
        .args(["-aec", "HNET", "127.0.0.1"])
        .arg(srv.dicom_port.to_string())
        .output()
        .unwrap_or_else(|_| tool_missing("echoscu (dcmtk)"));
    assert!(
        o.status.success(),
        "echoscu: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let uid = study_uid(1);
    // Clinical data first; the images follow.
    let (s, _, b) = http(
        &srv.http,
        "PUT",
        &format!("/v1/studies/{uid}/clinical"),
        &[("Content-Type", "application/json")],
        br#"{"age": 81, "gcs": 7, "anticoagulant": true}"#,
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    storescu(srv.dicom_port, &root.join("s1"));
    let v = wait_for(&srv.http, &uid, 60, done);
    assert_eq!(v["instances"], 8);
    assert_eq!(v["scored_with_clinical_data"], true);
    assert_eq!(v["prediction"]["input"]["clinical_features_given"], 3);
    let p_any = v["prediction"]["decision_path"]["level_1"]["probability"]
        .as_f64()
        .unwrap();

    // Forwarded to the PACS: the SR and three overlays, filed under the source study.
    let v = wait_for(&srv.http, &uid, 60, |v| v["forward"]["status"] == "sent");
    assert_eq!(v["forward"]["attempts"], 1);
    let t = Instant::now();
    let received = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&pacs_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if files.len() >= 4 || t.elapsed() > Duration::from_secs(20) {
            break files;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(received.len(), 4, "{received:?}");
    let mut modalities = Vec::new();
    for f in &received {
        let o = dicom_object::open_file(f).unwrap();
        let s = |t| {
            o.element(t)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        };
        assert_eq!(s(dicom_dictionary_std::tags::STUDY_INSTANCE_UID), uid);
        assert_eq!(s(dicom_dictionary_std::tags::PATIENT_ID), SENTINEL_ID);
        modalities.push(s(dicom_dictionary_std::tags::MODALITY));
    }
    modalities.sort();
    assert_eq!(modalities, ["OT", "OT", "OT", "SR"]);

    // The SR over HTTP.
    let (s, head, sr) = http(&srv.http, "GET", &format!("/v1/studies/{uid}/sr"), &[], b"");
    assert_eq!(s, 200);
    assert!(head.contains("application/dicom"));
    let sr_path = root.join("sr.dcm");
    std::fs::write(&sr_path, &sr).unwrap();
    let sr_uid = |p: &Path| {
        let o = dicom_object::open_file(p).unwrap();
        o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let first_sr_uid = sr_uid(&sr_path);
    let (s, head, body) = http(
        &srv.http,
        "GET",
        &format!("/v1/studies/{uid}/overlay"),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    assert!(head.contains("multipart/related"), "{head}");
    assert_eq!(
        body.windows(b"application/dicom".len())
            .filter(|w| w == b"application/dicom")
            .count(),
        3
    );

    // Worklist, page and metrics.
    let (s, wl) = get_json(&srv.http, "/v1/worklist");
    assert_eq!(s, 200);
    assert_eq!(wl["studies"][0]["id"], uid.as_str());
    assert!((wl["studies"][0]["p_hemorrhage"].as_f64().unwrap() - p_any).abs() < 1e-12);
    let (s, _, page) = http(&srv.http, "GET", "/", &[], b"");
    let page = String::from_utf8(page).unwrap();
    assert_eq!(s, 200);
    assert!(page.contains("SYNTHETIC MODEL") && page.contains("Not a medical device"));
    assert!(page.contains(&uid) && !page.contains("SENTINEL"));
    let (s, _, png) = http(
        &srv.http,
        "GET",
        &format!("/v1/studies/{uid}/overlay/1/png"),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    assert!(png.starts_with(b"\x89PNG"));
    let (_, _, m) = http(&srv.http, "GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    for line in [
        "hemorrhagenet_studies_scored_total 1",
        "hemorrhagenet_instances_received_total 8",
        "hemorrhagenet_forward_sent_total 1",
        "hemorrhagenet_associations_total 2",
        "hemorrhagenet_queue_depth 0",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    assert!(!m.contains("SENTINEL") && !m.contains(&uid));

    // New clinical data: rescored, result replaced, same SR UID.
    let before = v["updated_unix"].as_f64().unwrap();
    let attempts = v["attempts"].as_u64().unwrap();
    let (s, _, _) = http(
        &srv.http,
        "PUT",
        &format!("/v1/studies/{uid}/clinical"),
        &[("Content-Type", "application/json")],
        br#"{"age": 81, "gcs": 14}"#,
    );
    assert_eq!(s, 202);
    let v = wait_for(&srv.http, &uid, 60, |v| {
        done(v)
            && v["updated_unix"].as_f64().unwrap() > before
            && v["attempts"].as_u64() == Some(attempts + 1)
    });
    assert_eq!(v["prediction"]["input"]["clinical_features_given"], 2);
    let (_, _, sr2) = http(&srv.http, "GET", &format!("/v1/studies/{uid}/sr"), &[], b"");
    std::fs::write(&sr_path, &sr2).unwrap();
    assert_eq!(sr_uid(&sr_path), first_sr_uid);

    let _ = pacs.kill();
    let _ = pacs.wait();
    assert_clean_log(&srv.log, &[uid]);
}

fn multipart_form(boundary: &str, fields: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, ct, data) in fields {
        b.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

fn zip_of(dir: &Path, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            w.start_file(
                format!("study/{}", f.file_name().unwrap().to_string_lossy()),
                o,
            )
            .unwrap();
            w.write_all(&std::fs::read(&f).unwrap()).unwrap();
        }
        for (name, data) in extra {
            w.start_file(*name, o).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

/// HTTP: STOW-RS from dicomweb-client, a zip upload with clinical data, a NIfTI upload, and
/// every malformed request answered 4xx while the service keeps serving; bearer tokens.
#[test]
fn http_uploads_stow_and_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    for i in [1, 2, 3] {
        write_dicom(&root.join(format!("s{i}")), i);
    }
    std::fs::write(root.join("tokens"), "# operators\nsecret-one\nsecret-two\n").unwrap();
    std::fs::write(
        root.join("serve.toml"),
        "study_timeout_s = 1.0\n[limits]\nmax_body_bytes = 4000000\n",
    )
    .unwrap();
    let log = root.join("serve.log");
    let srv = start(
        &root.join("model"),
        &root.join("data"),
        &log,
        &[
            "--token-file",
            root.join("tokens").to_str().unwrap(),
            "--config",
            root.join("serve.toml").to_str().unwrap(),
        ],
    );
    let auth = ("Authorization", "Bearer secret-two");
    // Authentication: healthz is open, the rest needs a token.
    assert_eq!(http(&srv.http, "GET", "/healthz", &[], b"").0, 200);
    let (s, head, _) = http(&srv.http, "GET", "/v1/worklist", &[], b"");
    assert_eq!(s, 401);
    assert!(head.contains("www-authenticate: Bearer") || head.contains("WWW-Authenticate"));
    assert_eq!(
        http(
            &srv.http,
            "GET",
            "/v1/worklist",
            &[("Authorization", "Bearer wrong")],
            b""
        )
        .0,
        401
    );
    assert_eq!(http(&srv.http, "GET", "/readyz", &[auth], b"").0, 200);
    // An unwritable store (its probe path taken by a non-empty folder, as a full or read-only
    // disk would fail the write): readyz goes false, and true again once it is writable.
    std::fs::remove_file(root.join("data/.probe")).unwrap();
    std::fs::create_dir_all(root.join("data/.probe/x")).unwrap();
    let (s, _, b) = http(&srv.http, "GET", "/readyz", &[auth], b"");
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("not writable"));
    std::fs::remove_dir_all(root.join("data/.probe")).unwrap();
    assert_eq!(http(&srv.http, "GET", "/readyz", &[auth], b"").0, 200);

    // STOW-RS with dicomweb-client.
    let script = r#"
import sys, glob, pydicom
from dicomweb_client.api import DICOMwebClient
c = DICOMwebClient(url=sys.argv[1], headers={"Authorization": "Bearer secret-one"})
ds = [pydicom.dcmread(f) for f in sorted(glob.glob(sys.argv[2] + "/*.dcm"))]
r = c.store_instances(datasets=ds)
print(len(r.ReferencedSOPSequence))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("http://{}/dicomweb", srv.http))
        .arg(root.join("s1"))
        .output()
        .unwrap_or_else(|_| tool_missing("python3 with dicomweb-client"));
    assert!(
        o.status.success(),
        "dicomweb-client: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "8");
    let uid1 = study_uid(1);
    let bearer = |addr: &str, id: &str| {
        let t = Instant::now();
        loop {
            let (_, _, b) = http(addr, "GET", &format!("/v1/studies/{id}"), &[auth], b"");
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            if done(&v) {
                return v;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{id}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let v = bearer(&srv.http, &uid1);
    assert_eq!(v["scored_with_clinical_data"], false);
    assert!(
        v["note"]
            .as_str()
            .unwrap()
            .contains("without clinical data")
    );

    // A zip of a study with clinical data (multipart form), junk files inside skipped.
    let z = zip_of(&root.join("s3"), &[("README.txt", b"not dicom")]);
    let body = multipart_form(
        "XyZ",
        &[
            ("study", "application/zip", &z),
            ("clinical", "application/json", br#"{"age": 64, "gcs": 12}"#),
        ],
    );
    let (s, _, b) = http(
        &srv.http,
        "POST",
        "/v1/studies",
        &[auth, ("Content-Type", "multipart/form-data; boundary=XyZ")],
        &body,
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    let r: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(r["id"], study_uid(3).as_str());
    assert_eq!(
        (r["instances"].as_u64(), r["skipped_files"].as_u64()),
        (Some(8), Some(1))
    );
    let v = bearer(&srv.http, &study_uid(3));
    assert_eq!(v["scored_with_clinical_data"], true);

    // NIfTI as the raw body.
    let cfg = hn_data::synth::SynthConfig {
        size: 40,
        n_slices: Some(8),
        ..Default::default()
    };
    let st = hn_data::synth::generate_study(&cfg, 5, 2);
    let nii = hn_imaging::nifti::volume_bytes(&st.volume, true).unwrap();
    let (s, _, b) = http(
        &srv.http,
        "POST",
        "/v1/studies",
        &[auth, ("Content-Type", "application/gzip")],
        &nii,
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    let id: Value = serde_json::from_slice(&b).unwrap();
    let v = bearer(&srv.http, id["id"].as_str().unwrap());
    assert_eq!(v["input"], "nifti");
    let (s, _, _) = http(
        &srv.http,
        "GET",
        &format!("/v1/studies/{}/sr", id["id"].as_str().unwrap()),
        &[auth],
        b"",
    );
    assert_eq!(s, 404, "a NIfTI study has no SR");

    // Malformed requests: all 4xx, never 5xx.
    let traversal = zip_of(&root.join("s2"), &[("../../etc/passwd", b"x")]);
    let mut broken_dcm = std::fs::read(root.join("s2/IM0001.dcm")).unwrap();
    broken_dcm.truncate(400);
    let clinical_path = format!("/v1/studies/{uid1}/clinical");
    let overlay_path = format!("/v1/studies/{uid1}/overlay/9");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/studies",
            vec![auth],
            b"hello, not a study".to_vec(),
            415,
        ),
        ("POST", "/v1/studies", vec![auth], traversal, 400),
        (
            "POST",
            "/v1/studies",
            vec![auth],
            b"PK\x03\x04broken zip".to_vec(),
            400,
        ),
        ("POST", "/v1/studies", vec![auth], broken_dcm.clone(), 400),
        (
            "POST",
            "/v1/studies",
            vec![auth, ("Content-Type", "multipart/form-data; boundary=Q")],
            b"--Q\r\nbroken".to_vec(),
            400,
        ),
        ("POST", "/v1/studies", vec![auth], vec![0u8; 4_100_000], 413),
        (
            "POST",
            "/dicomweb/studies",
            vec![auth, ("Content-Type", "application/json")],
            b"{}".to_vec(),
            415,
        ),
        (
            "PUT",
            &clinical_path,
            vec![auth],
            br#"{"gcs": 99}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            &clinical_path,
            vec![auth],
            br#"{"shoe_size": 9}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/v1/studies/not-a-uid/clinical",
            vec![auth],
            br#"{"gcs": 9}"#.to_vec(),
            404,
        ),
        ("GET", "/v1/studies/1.2.3.4", vec![auth], vec![], 404),
        ("GET", &overlay_path, vec![auth], vec![], 404),
    ];
    for (method, path, headers, body, want) in &cases {
        let (s, _, b) = http(&srv.http, method, path, headers, body);
        assert_eq!(s, *want, "{method} {path}: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert!(v["error"].is_string() || s == 413, "{method} {path}: {v}");
    }
    // STOW-RS of a part that is not DICOM: 409 with the reason per instance.
    let body = b"--B\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--B--\r\n";
    let (s, head, b) = http(
        &srv.http,
        "POST",
        "/dicomweb/studies",
        &[
            auth,
            (
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=B",
            ),
        ],
        body,
    );
    assert_eq!(s, 409);
    assert!(head.contains("application/dicom+json"));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    // Still serving.
    assert_eq!(http(&srv.http, "GET", "/healthz", &[], b"").0, 200);
    let (_, _, b) = http(&srv.http, "GET", "/v1/worklist", &[auth], b"");
    let wl: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(wl["studies"].as_array().unwrap().len(), 3);
    assert_clean_log(&log, &[uid1, study_uid(3)]);
}

/// Where the store writes instance `file` of study `idx`: its temporary file, which the test
/// makes a link to `/dev/full` so that the kernel answers the write with ENOSPC exactly as a
/// full volume does (no privileges, no real disk to fill).
fn fill_disk_under(data: &Path, study: &str, file: &Path) -> PathBuf {
    let sop = dicom_text(file, dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    let part = data
        .join("studies")
        .join(hn_serve::store::hashed_name(study))
        .join("instances")
        .join(format!("{}.part", hn_serve::store::hashed_name(&sop)));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", &part).unwrap();
    part
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    f.sort();
    f
}

/// A full disk: the instance that cannot be written is refused (C-STORE 0xA700 "out of
/// resources", HTTP 507 with Retry-After), the log names the cause, `readyz` goes false while
/// the store cannot write, nothing refused is counted as received, and once space is back
/// the same studies sent again are scored whole.
#[test]
fn a_full_disk_is_refused_clearly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    for i in [1, 2] {
        write_dicom(&root.join(format!("s{i}")), i);
    }
    std::fs::write(root.join("serve.toml"), "study_timeout_s = 1.0\n").unwrap();
    let log = root.join("serve.log");
    let data = root.join("data");
    let srv = start(
        &root.join("model"),
        &data,
        &log,
        &["--config", root.join("serve.toml").to_str().unwrap()],
    );
    assert_eq!(http(&srv.http, "GET", "/readyz", &[], b"").0, 200);

    // DICOM: the third instance of study 1 meets a full disk.
    let s1 = sorted_files(&root.join("s1"));
    let link = fill_disk_under(&data, &study_uid(1), &s1[2]);
    let o = Command::new("storescu")
        .args(["-v", "-aet", "CTSCANNER", "-aec", "HNET", "127.0.0.1"])
        .arg(srv.dicom_port.to_string())
        .args(&s1)
        .output()
        .unwrap_or_else(|_| tool_missing("storescu (dcmtk)"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
    .to_lowercase();
    assert!(
        said.contains("refused: outofresources"),
        "storescu was told the instance is refused: {said}"
    );
    assert!(!link.exists(), "the partial file is removed");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("No space left on device"),
        "the log names the cause: {text}"
    );
    let (_, v) = get_json(&srv.http, &format!("/v1/studies/{}", study_uid(1)));
    // storescu stops at the refusal: the two instances before it are stored, nothing after.
    assert_eq!(v["instances"], 2, "two stored, the refused one not: {v}");

    // The store's own probe on a full disk: readyz false, true again once it can write.
    std::os::unix::fs::symlink("/dev/full", data.join(".probe.part")).unwrap();
    let (s, _, b) = http(&srv.http, "GET", "/readyz", &[], b"");
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(http(&srv.http, "GET", "/readyz", &[], b"").0, 200);

    // HTTP: a zip upload meeting a full disk is 507 with Retry-After, not 500 and not 202.
    let s2 = sorted_files(&root.join("s2"));
    fill_disk_under(&data, &study_uid(2), &s2[5]);
    let z = zip_of(&root.join("s2"), &[]);
    let (s, head, b) = http(
        &srv.http,
        "POST",
        "/v1/studies",
        &[("Content-Type", "application/zip")],
        &z,
    );
    let body = String::from_utf8_lossy(&b);
    assert_eq!(s, 507, "{body}");
    assert!(head.to_lowercase().contains("retry-after"), "{head}");
    assert!(body.contains("No space left on device"), "{body}");

    // Space is back: the scanner resends study 1 and the client its zip; both are scored
    // with every instance.
    storescu(srv.dicom_port, &root.join("s1"));
    let (s, _, b) = http(
        &srv.http,
        "POST",
        "/v1/studies",
        &[("Content-Type", "application/zip")],
        &z,
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    for i in [1, 2] {
        let v = wait_for(&srv.http, &study_uid(i), 60, |v| {
            done(v) && v["instances"] == 8
        });
        assert!(v["prediction"].is_object(), "{v}");
    }
    assert_clean_log(&log, &[study_uid(1), study_uid(2)]);
}

/// Durability: a study acknowledged by C-STORE survives `kill -9` before its timeout and
/// while it is being scored; after a restart on the same data every acknowledged study ends
/// done. And a full queue refuses new studies with 503 + Retry-After.
#[test]
fn acknowledged_studies_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    for i in [1, 2, 3, 4] {
        write_dicom(&root.join(format!("s{i}")), i);
    }
    std::fs::write(
        root.join("serve.toml"),
        "study_timeout_s = 1.0\nqueue_capacity = 1\n[test_hooks]\nscore_delay_ms = 6000\n",
    )
    .unwrap();
    let toml = root.join("serve.toml");
    let cfg = ["--config", toml.to_str().unwrap()];
    let data = root.join("data");
    let log = root.join("serve.log");
    let mut srv = start(&root.join("model"), &data, &log, &cfg);
    // Study 1: killed while being scored.
    storescu(srv.dicom_port, &root.join("s1"));
    wait_for(&srv.http, &study_uid(1), 30, |v| v["status"] == "running");
    // Study 2: acknowledged, then killed before its timeout passes.
    storescu(srv.dicom_port, &root.join("s2"));
    let (_, v) = get_json(&srv.http, &format!("/v1/studies/{}", study_uid(2)));
    assert!(v["status"] == "receiving" || v["status"] == "queued", "{v}");
    // The queue holds one study: study 2 gets queued while study 1 is scored, so a third
    // study is refused.
    wait_for(&srv.http, &study_uid(2), 30, |v| v["status"] == "queued");
    let z = zip_of(&root.join("s3"), &[]);
    let (s, head, _) = http(&srv.http, "POST", "/v1/studies", &[], &z);
    assert_eq!(s, 503);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 30"),
        "{head}"
    );
    let o = Command::new("storescu")
        .args(["-v", "-aec", "HNET", "127.0.0.1"])
        .arg(srv.dicom_port.to_string())
        .arg(root.join("s4/IM0001.dcm"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("A700") || said.contains("OutOfResources"),
        "storescu to a full queue: {said}"
    );
    // kill -9 now: study 1 running, study 2 queued.
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    drop(srv);
    let fast = root.join("fast.toml");
    std::fs::write(&fast, "study_timeout_s = 1.0\n").unwrap();
    let srv = start(
        &root.join("model"),
        &data,
        &log,
        &["--config", fast.to_str().unwrap()],
    );
    for i in [1, 2] {
        let v = wait_for(&srv.http, &study_uid(i), 60, done);
        assert_eq!(v["instances"], 8, "study {i}");
    }
    let (s, _) = get_json(&srv.http, &format!("/v1/studies/{}", study_uid(3)));
    assert_eq!(s, 404, "a refused study was never acknowledged");
    assert_clean_log(&log, &[study_uid(1), study_uid(2)]);
}

/// A real PACS: Orthanc (Debian package `orthanc`) holds a study, is told over its REST API to
/// send it to our node (configured there as a modality), and receives the SR and the overlay
/// series back into the same study, as its REST API then shows.
#[test]
fn orthanc_sends_a_study_and_files_the_results_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    write_dicom(&root.join("s1"), 1);
    let (orthanc_http, orthanc_dicom, node_dicom) = (free_port(), free_port(), free_port());
    let cfg = serde_json::json!({
        "Name": "hn-test-pacs",
        "StorageDirectory": root.join("orthanc-db"),
        "IndexDirectory": root.join("orthanc-db"),
        "HttpPort": orthanc_http,
        "DicomPort": orthanc_dicom,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "DicomCheckCalledAet": false,
        "DicomModalities": { "hnet": ["HNET", "127.0.0.1", node_dicom] },
        "Plugins": []
    });
    std::fs::write(root.join("orthanc.json"), cfg.to_string()).unwrap();
    let orthanc_bin = ["Orthanc", "/usr/sbin/Orthanc"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .unwrap_or_else(|| tool_missing("Orthanc (apt-get install orthanc)"));
    let mut orthanc = Command::new(orthanc_bin)
        .arg(root.join("orthanc.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pacs = format!("127.0.0.1:{orthanc_http}");
    let t = Instant::now();
    while TcpStream::connect(&pacs).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "Orthanc did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = root.join("serve.log");
    let fwd = format!("ORTHANC@127.0.0.1:{orthanc_dicom}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
        .args(["serve", "--model"])
        .arg(root.join("model"))
        .arg("--data")
        .arg(root.join("data"))
        .args(["--http", "127.0.0.1:0", "--dicom"])
        .arg(format!("127.0.0.1:{node_dicom}"))
        .args(["--study-timeout", "1", "--forward", &fwd])
        .env("HEMORRHAGENET_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let node_http = serde_json::from_str::<Value>(&line).unwrap()["http"]
        .as_str()
        .unwrap()
        .to_string();

    // The study goes into Orthanc over its REST API…
    for e in std::fs::read_dir(root.join("s1")).unwrap() {
        let (s, _, b) = http(
            &pacs,
            "POST",
            "/instances",
            &[],
            &std::fs::read(e.unwrap().path()).unwrap(),
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (_, _, b) = http(&pacs, "GET", "/studies", &[], b"");
    let studies: Vec<String> = serde_json::from_slice(&b).unwrap();
    assert_eq!(studies.len(), 1);
    // …and Orthanc sends it to our node (C-STORE SCU on its side).
    let body = format!("\"{}\"", studies[0]);
    let (s, _, b) = http(
        &pacs,
        "POST",
        "/modalities/hnet/store",
        &[],
        body.as_bytes(),
    );
    assert_eq!(
        s,
        200,
        "Orthanc could not send to the node: {}",
        String::from_utf8_lossy(&b)
    );
    let uid = study_uid(1);
    wait_for(&node_http, &uid, 60, |v| v["forward"]["status"] == "sent");

    // Orthanc now shows the SR and the overlay series in the same study.
    let t = Instant::now();
    let series = loop {
        let (_, _, b) = http(
            &pacs,
            "GET",
            &format!("/studies/{}/series", studies[0]),
            &[],
            b"",
        );
        let v: Vec<Value> = serde_json::from_slice(&b).unwrap();
        if v.len() >= 3 || t.elapsed() > Duration::from_secs(20) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut found: Vec<(String, usize)> = series
        .iter()
        .map(|s| {
            (
                s["MainDicomTags"]["Modality"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                s["Instances"].as_array().unwrap().len(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [("CT".to_string(), 8), ("OT".into(), 3), ("SR".into(), 1)]
    );
    let sr = series
        .iter()
        .find(|s| s["MainDicomTags"]["Modality"] == "SR")
        .unwrap();
    let inst = sr["Instances"][0].as_str().unwrap();
    let (_, _, b) = http(
        &pacs,
        "GET",
        &format!("/instances/{inst}/simplified-tags"),
        &[],
        b"",
    );
    let tags: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(tags["StudyInstanceUID"], uid.as_str());
    assert_eq!(tags["PatientID"], SENTINEL_ID);
    assert_eq!(tags["SeriesNumber"], "9001");
    let _ = child.kill();
    let _ = child.wait();
    let _ = orthanc.kill();
    let _ = orthanc.wait();
    assert_clean_log(&log, &[uid]);
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Load on loopback: 8 DICOM associations (storescu, one study each) at once with 200
/// concurrent HTTP clients, a quarter of them malformed. Every request is answered with the
/// expected status in bounded time (no 5xx), every study is scored exactly once, and the
/// process's peak memory stays bounded.
#[test]
fn load_200_http_clients_and_8_associations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_tiny_model(&root.join("model"));
    for i in 1..=8 {
        write_dicom(&root.join(format!("s{i}")), i);
    }
    let log = root.join("serve.log");
    let srv = start(
        &root.join("model"),
        &root.join("data"),
        &log,
        &["--study-timeout", "3"],
    );
    let started = Instant::now();
    std::thread::scope(|sc| {
        let mut dicom = Vec::new();
        for i in 1..=8 {
            let dir = root.join(format!("s{i}"));
            let port = srv.dicom_port;
            dicom.push(sc.spawn(move || storescu(port, &dir)));
        }
        let mut clients = Vec::new();
        for k in 0..200 {
            let addr = srv.http.clone();
            clients.push(sc.spawn(move || {
                let (want, (got, _, body)) = match k % 4 {
                    0 => (
                        415,
                        http(&addr, "POST", "/v1/studies", &[], b"junk junk junk"),
                    ),
                    1 => (200, http(&addr, "GET", "/v1/worklist", &[], b"")),
                    2 => (
                        404,
                        http(&addr, "GET", &format!("/v1/studies/9.{k}"), &[], b""),
                    ),
                    _ => (
                        409,
                        http(
                            &addr,
                            "POST",
                            "/dicomweb/studies",
                            &[(
                                "Content-Type",
                                "multipart/related; type=\"application/dicom\"; boundary=b",
                            )],
                            b"--b\r\nContent-Type: application/dicom\r\n\r\nnope\r\n--b--\r\n",
                        ),
                    ),
                };
                assert_eq!(got, want, "client {k}: {}", String::from_utf8_lossy(&body));
            }));
        }
        for c in clients {
            c.join().unwrap();
        }
        for d in dicom {
            d.join().unwrap();
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the load took {:?}",
        started.elapsed()
    );
    for i in 1..=8 {
        let v = wait_for(&srv.http, &study_uid(i), 120, done);
        assert_eq!(v["instances"], 8);
        assert_eq!(
            v["attempts"],
            1,
            "study {i} scored once: {v}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    let (_, wl) = get_json(&srv.http, "/v1/worklist");
    let ids: std::collections::BTreeSet<&str> = wl["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 8, "no lost or duplicated study: {wl}");
    assert_eq!(wl["studies"].as_array().unwrap().len(), 8);
    let (_, _, m) = http(&srv.http, "GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("hemorrhagenet_studies_scored_total 8"), "{m}");
    assert!(
        m.contains("hemorrhagenet_instances_received_total 114"),
        "64 stored + 50 refused STOW parts: {m}"
    );
    let rss = peak_rss_kib(srv.child.id());
    assert!(rss > 0 && rss < 1_500_000, "peak RSS {rss} KiB");
}
