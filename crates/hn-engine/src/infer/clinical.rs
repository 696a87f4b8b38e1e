//! `--clinical FILE`: one patient's clinical record as JSON (a [`ClinicalRecord`] object) or
//! CSV (a header row of feature names and one data row; an empty cell is missing).

use std::path::Path;

use hn_data::ClinicalRecord;
use hn_data::clinical::{CLINICAL_FEATURES, FeatureKind};
use serde_json::{Map, Value};

use super::InferError;

fn err(path: &Path, msg: impl Into<String>) -> InferError {
    InferError::Clinical {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn known_names() -> String {
    CLINICAL_FEATURES
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Read a clinical record from `path` (`.json` or `.csv`). Unknown feature names, malformed
/// values and out-of-range scores are errors naming the file.
pub fn read_clinical(path: &Path) -> Result<ClinicalRecord, InferError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let map = match ext.as_str() {
        "json" => json_object(path, &text)?,
        "csv" => csv_row(path, &text)?,
        _ => {
            return Err(err(
                path,
                "clinical file must be .json (an object) or .csv (header + one row)",
            ));
        }
    };
    record_from_map(path, map)
}

/// A clinical record from JSON text (an object of features, as `--clinical FILE.json`);
/// `origin` names where the text came from in errors (a file, a request field).
pub fn parse_clinical_json(origin: &Path, text: &str) -> Result<ClinicalRecord, InferError> {
    record_from_map(origin, json_object(origin, text)?)
}

fn json_object(path: &Path, text: &str) -> Result<Map<String, Value>, InferError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| err(path, format!("not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(err(path, "expected a JSON object of clinical features")),
    }
}

fn record_from_map(path: &Path, map: Map<String, Value>) -> Result<ClinicalRecord, InferError> {
    let unknown: Vec<&String> = map
        .keys()
        .filter(|k| !CLINICAL_FEATURES.iter().any(|f| f.name == k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(err(
            path,
            format!(
                "unknown clinical feature(s) {unknown:?}; known: {}",
                known_names()
            ),
        ));
    }
    let rec: ClinicalRecord = serde_json::from_value(Value::Object(map))
        .map_err(|e| err(path, format!("bad clinical value: {e}")))?;
    rec.validate().map_err(|m| err(path, m))?;
    Ok(rec)
}

fn csv_row(path: &Path, text: &str) -> Result<Map<String, Value>, InferError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rd
        .headers()
        .map_err(|e| err(path, format!("bad CSV header: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let rows: Vec<csv::StringRecord> = rd
        .records()
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, format!("bad CSV: {e}")))?;
    if rows.len() != 1 {
        return Err(err(
            path,
            format!("expected one data row, found {}", rows.len()),
        ));
    }
    let mut map = Map::new();
    for (h, cell) in headers.iter().zip(rows[0].iter()) {
        let Some(f) = CLINICAL_FEATURES.iter().find(|f| f.name == h) else {
            // Reported as unknown by the caller.
            map.insert(h.clone(), Value::Null);
            continue;
        };
        let v = if hn_data::clinical::is_missing_token(cell) {
            Value::Null
        } else if matches!(f.kind, FeatureKind::Binary) {
            match hn_data::clinical::parse_bool_token(cell) {
                Ok(Some(b)) => Value::Bool(b),
                Ok(None) => Value::Null,
                Err(e) => return Err(err(path, format!("column {h}: {e}"))),
            }
        } else {
            match cell.parse::<f64>() {
                Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => {
                    Value::from(x as i64)
                }
                Ok(x) if x.is_finite() => Value::from(x),
                _ => return Err(err(path, format!("column {h}: `{cell}` is not a number"))),
            }
        };
        map.insert(h.clone(), v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn json_and_csv_agree_and_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let j = write(
            d.path(),
            "c.json",
            r#"{"age": 71, "gcs": 9, "anticoagulant": true, "inr": null}"#,
        );
        let c = write(d.path(), "c.csv", "age,gcs,anticoagulant,inr\n71,9,yes,\n");
        let a = read_clinical(&j).unwrap();
        let b = read_clinical(&c).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.gcs, Some(9));
        assert_eq!(a.anticoagulant, Some(true));
        assert_eq!(a.inr, None);

        let bad = write(d.path(), "bad.json", r#"{"age": 71, "gcs_score": 9}"#);
        let e = read_clinical(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("gcs_score"), "{e}");
        let broken = write(d.path(), "broken.json", "{ not json");
        let e = read_clinical(&broken).unwrap_err().to_string();
        assert!(
            e.contains("broken.json") && e.contains("not valid JSON"),
            "{e}"
        );
        let range = write(d.path(), "r.csv", "gcs\n2\n");
        let e = read_clinical(&range).unwrap_err().to_string();
        assert!(e.contains("r.csv") && e.contains("gcs 2"), "{e}");
        let two = write(d.path(), "two.csv", "age\n1\n2\n");
        assert!(
            read_clinical(&two)
                .unwrap_err()
                .to_string()
                .contains("one data row")
        );
        let e = read_clinical(&d.path().join("nope.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.json"), "{e}");
    }
}
