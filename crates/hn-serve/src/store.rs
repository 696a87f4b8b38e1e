//! The durable job store: one SQLite database (WAL, `synchronous=FULL`) for study state, and a
//! folder per study for its received files and results.
//!
//! A study is acknowledged (C-STORE success, HTTP 2xx) only after its bytes are on disk and
//! fsynced and its row committed, so an acknowledged study survives `kill -9`. On start,
//! studies left `running` by a crash go back to `queued`; `receiving` ones keep waiting for
//! their timeout. File and folder names are hashes: no identifier reaches the file system.
//!
//! Layout under `--data`:
//! ```text
//! jobs.sqlite
//! studies/<h>/instances/<hash of SOP instance UID>.dcm   DICOM input (Part-10)
//! studies/<h>/input.nii[.gz]                             NIfTI input
//! studies/<h>/result/                                    prediction.json, overlays, dicom/
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A study's life: received instances wait for the study timeout (`receiving`), then wait for a
/// worker (`queued`), are scored (`running`) and end `done` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Receiving,
    Queued,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Receiving => "receiving",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "receiving" => Status::Receiving,
            "queued" => Status::Queued,
            "running" => Status::Running,
            "done" => Status::Done,
            _ => Status::Failed,
        }
    }
}

/// What a study was received as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Dicom,
    Nifti,
}

/// One study's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyRow {
    pub id: String,
    #[serde(skip)]
    pub dir: String,
    pub kind: InputKind,
    pub status: Status,
    pub instances: u64,
    pub bytes: u64,
    pub received_unix: f64,
    pub updated_unix: f64,
    /// Clinical data as given (JSON object), if any.
    #[serde(skip)]
    pub clinical: Option<String>,
    pub clinical_given: bool,
    /// Whether the current result was scored with clinical data.
    pub scored_with_clinical: Option<bool>,
    pub attempts: u32,
    pub error: Option<String>,
    pub p_hemorrhage: Option<f64>,
    pub hemorrhage: Option<bool>,
    pub review: Option<bool>,
    /// `pending`, `sent` or `failed` when forwarding is configured.
    pub forward_status: Option<String>,
    pub forward_attempts: u32,
    pub forward_error: Option<String>,
    /// Set when new input (instances, clinical data) arrived while the study was scored: the
    /// study is scored again afterwards.
    #[serde(skip)]
    pub rescore: bool,
}

/// Errors of the store: all ours (a server answers 5xx and `readyz` goes false).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl StoreError {
    /// Whether the disk (or the service user's quota) is full: nothing is wrong with the
    /// request, and the client may send it again once space is freed.
    pub fn is_disk_full(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            StoreError::Io { cause, .. } => matches!(
                cause.kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded
            ),
            StoreError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Db(_) => false,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Hex SHA-256 prefix: names for folders and files that carry no identifier.
pub fn hashed_name(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 prefix of bytes (the id of a NIfTI upload: the same file is the same study).
pub fn content_name(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, stable, non-identifying name for a study in logs.
pub fn log_name(id: &str) -> String {
    format!("study-{}", &hashed_name(id)[..10])
}

/// Write `bytes` to `path` durably: temp file, fsync, rename, fsync the folder.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("part");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // A partial file on a full disk holds space the next write needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY,
    dir TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    received_unix REAL NOT NULL,
    last_input_unix REAL NOT NULL,
    updated_unix REAL NOT NULL,
    clinical TEXT,
    scored_with_clinical INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    p_hemorrhage REAL,
    hemorrhage INTEGER,
    review INTEGER,
    forward_status TEXT,
    forward_attempts INTEGER NOT NULL DEFAULT 0,
    forward_error TEXT,
    forward_next_unix REAL,
    rescore INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    study_id TEXT NOT NULL,
    name TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (study_id, name)
);
CREATE INDEX IF NOT EXISTS studies_status ON studies (status, received_unix);
";

const ROW_COLUMNS: &str = "s.id, s.dir, s.kind, s.status, s.received_unix, s.updated_unix, s.clinical, \
     s.scored_with_clinical, s.attempts, s.error, s.p_hemorrhage, s.hemorrhage, s.review, \
     s.forward_status, s.forward_attempts, s.forward_error, s.rescore, \
     (SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id), \
     (SELECT COALESCE(SUM(bytes), 0) FROM instances i WHERE i.study_id = s.id)";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StudyRow> {
    let kind: String = r.get(2)?;
    let status: String = r.get(3)?;
    let clinical: Option<String> = r.get(6)?;
    Ok(StudyRow {
        id: r.get(0)?,
        dir: r.get(1)?,
        kind: if kind == "nifti" {
            InputKind::Nifti
        } else {
            InputKind::Dicom
        },
        status: Status::parse(&status),
        received_unix: r.get(4)?,
        updated_unix: r.get(5)?,
        clinical_given: clinical.is_some(),
        clinical,
        scored_with_clinical: r.get::<_, Option<i64>>(7)?.map(|v| v != 0),
        attempts: r.get(8)?,
        error: r.get(9)?,
        p_hemorrhage: r.get(10)?,
        hemorrhage: r.get::<_, Option<i64>>(11)?.map(|v| v != 0),
        review: r.get::<_, Option<i64>>(12)?.map(|v| v != 0),
        forward_status: r.get(13)?,
        forward_attempts: r.get(14)?,
        forward_error: r.get(15)?,
        rescore: r.get::<_, i64>(16)? != 0,
        instances: r.get::<_, i64>(17)? as u64,
        bytes: r.get::<_, i64>(18)? as u64,
    })
}

/// What happened to an instance offered to a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored,
    /// Too many studies waiting: try again later.
    QueueFull,
    /// The study would exceed a per-study limit.
    StudyTooLarge,
}

/// The result summary a worker records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub p_hemorrhage: f64,
    pub hemorrhage: bool,
    pub review: bool,
    pub with_clinical: bool,
}

/// The store: the database behind a mutex (its operations are short) and the data folder.
pub struct JobStore {
    db: Mutex<Connection>,
    root: PathBuf,
}

impl JobStore {
    /// Open (or create) the store under `root`; studies a crash left `running` are queued
    /// again.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root.join("studies")).map_err(io(root))?;
        let db = Connection::open(root.join("jobs.sqlite"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(SCHEMA)?;
        let recovered = db.execute(
            "UPDATE studies SET status = 'queued', updated_unix = ?1 WHERE status = 'running'",
            params![now_unix()],
        )?;
        if recovered > 0 {
            tracing::warn!("{recovered} study(ies) interrupted while scoring are queued again");
        }
        Ok(JobStore {
            db: Mutex::new(db),
            root: root.to_path_buf(),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolls back).
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The folder of a study.
    pub fn study_dir(&self, dir: &str) -> PathBuf {
        self.root.join("studies").join(dir)
    }

    /// A study's result folder.
    pub fn result_dir(&self, row: &StudyRow) -> PathBuf {
        self.study_dir(&row.dir).join("result")
    }

    /// Check the store is writable: a probe file fsynced and a database write.
    pub fn probe(&self) -> Result<(), StoreError> {
        write_durable(&self.root.join(".probe"), b"ok")?;
        self.db().execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<StudyRow>, StoreError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {ROW_COLUMNS} FROM studies s WHERE s.id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// Every study, newest first.
    pub fn all(&self) -> Result<Vec<StudyRow>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT {ROW_COLUMNS} FROM studies s ORDER BY s.received_unix DESC"
        ))?;
        let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Studies waiting for a worker.
    pub fn queue_depth(&self) -> Result<usize, StoreError> {
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM studies WHERE status = 'queued'",
            [],
            |r| r.get::<_, i64>(0),
        )? as usize)
    }

    /// Admit one DICOM instance of study `id`: write it durably, then record it. New studies
    /// are refused when `queue_capacity` studies already wait; instances of a study already
    /// being received are always admitted (else it could never complete).
    #[allow(clippy::too_many_arguments)]
    pub fn add_instance(
        &self,
        id: &str,
        sop_instance_uid: &str,
        part10: &[u8],
        queue_capacity: usize,
        max_instances: usize,
        max_study_bytes: u64,
    ) -> Result<Admission, StoreError> {
        let dir = hashed_name(id);
        let name = format!("{}.dcm", hashed_name(sop_instance_uid));
        {
            let db = self.db();
            let existing: Option<(i64, i64)> = db
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM instances WHERE study_id = ?1 \
                     AND name != ?2",
                    params![id, name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (n, bytes) = existing.unwrap_or((0, 0));
            let known: bool = db
                .query_row("SELECT 1 FROM studies WHERE id = ?1", params![id], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !known {
                let waiting: i64 = db.query_row(
                    "SELECT COUNT(*) FROM studies WHERE status = 'queued'",
                    [],
                    |r| r.get(0),
                )?;
                if waiting as usize >= queue_capacity {
                    return Ok(Admission::QueueFull);
                }
            }
            if n as usize >= max_instances || bytes as u64 + part10.len() as u64 > max_study_bytes {
                return Ok(Admission::StudyTooLarge);
            }
        }
        write_durable(&self.study_dir(&dir).join("instances").join(&name), part10)?;
        let now = now_unix();
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO studies (id, dir, kind, status, received_unix, last_input_unix, updated_unix) \
             VALUES (?1, ?2, 'dicom', 'receiving', ?3, ?3, ?3) \
             ON CONFLICT(id) DO UPDATE SET last_input_unix = ?3, updated_unix = ?3, \
               rescore = CASE WHEN status = 'running' THEN 1 ELSE rescore END, \
               status = CASE WHEN status = 'running' THEN 'running' ELSE 'receiving' END",
            params![id, dir, now],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO instances (study_id, name, bytes) VALUES (?1, ?2, ?3)",
            params![id, name, part10.len() as i64],
        )?;
        tx.commit()?;
        Ok(Admission::Stored)
    }

    /// Admit a whole NIfTI study (queued at once).
    pub fn add_nifti(
        &self,
        id: &str,
        bytes: &[u8],
        gz: bool,
        clinical: Option<&str>,
        queue_capacity: usize,
    ) -> Result<Admission, StoreError> {
        if self.queue_depth()? >= queue_capacity && self.get(id)?.is_none() {
            return Ok(Admission::QueueFull);
        }
        let dir = hashed_name(id);
        let file = if gz { "input.nii.gz" } else { "input.nii" };
        write_durable(&self.study_dir(&dir).join(file), bytes)?;
        let now = now_unix();
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO studies (id, dir, kind, status, received_unix, last_input_unix, updated_unix, clinical) \
             VALUES (?1, ?2, 'nifti', 'queued', ?3, ?3, ?3, ?4) \
             ON CONFLICT(id) DO UPDATE SET last_input_unix = ?3, updated_unix = ?3, \
               clinical = COALESCE(?4, clinical), \
               rescore = CASE WHEN status = 'running' THEN 1 ELSE rescore END, \
               status = CASE WHEN status = 'running' THEN status ELSE 'queued' END",
            params![id, dir, now, clinical],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO instances (study_id, name, bytes) VALUES (?1, ?2, ?3)",
            params![id, file, bytes.len() as i64],
        )?;
        tx.commit()?;
        Ok(Admission::Stored)
    }

    /// Set (replace) a study's clinical data. A finished study is scored again with it; one
    /// being scored is scored again afterwards. Creates a `receiving` row for a DICOM study
    /// whose images have not arrived yet. Returns the row.
    pub fn set_clinical(&self, id: &str, clinical: &str) -> Result<StudyRow, StoreError> {
        let now = now_unix();
        {
            let db = self.db();
            db.execute(
                "INSERT INTO studies (id, dir, kind, status, received_unix, last_input_unix, updated_unix, clinical) \
                 VALUES (?1, ?2, 'dicom', 'receiving', ?3, ?3, ?3, ?4) \
                 ON CONFLICT(id) DO UPDATE SET clinical = ?4, updated_unix = ?3, \
                   rescore = CASE WHEN status = 'running' THEN 1 ELSE rescore END, \
                   status = CASE WHEN status IN ('done', 'failed') THEN 'queued' ELSE status END",
                params![id, hashed_name(id), now, clinical],
            )?;
        }
        Ok(self.get(id)?.expect("row just written"))
    }

    /// Mark studies whose last input is older than `timeout_s` as queued (only those with
    /// instances: clinical data alone is not a study). Returns how many.
    pub fn promote_complete(&self, timeout_s: f64) -> Result<usize, StoreError> {
        Ok(self.db().execute(
            "UPDATE studies SET status = 'queued', updated_unix = ?1 \
             WHERE status = 'receiving' AND last_input_unix < ?2 \
             AND EXISTS (SELECT 1 FROM instances i WHERE i.study_id = studies.id)",
            params![now_unix(), now_unix() - timeout_s],
        )?)
    }

    /// Queue a study now (its upload was complete: a zip or a single file).
    pub fn promote_now(&self, id: &str) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE studies SET status = 'queued', updated_unix = ?2 \
             WHERE id = ?1 AND status = 'receiving'",
            params![id, now_unix()],
        )?;
        Ok(())
    }

    /// Take the oldest queued study for scoring.
    pub fn claim(&self) -> Result<Option<StudyRow>, StoreError> {
        let id: Option<String> = {
            let db = self.db();
            db.query_row(
                "UPDATE studies SET status = 'running', attempts = attempts + 1, rescore = 0, \
                   updated_unix = ?1 \
                 WHERE id = (SELECT id FROM studies WHERE status = 'queued' \
                             ORDER BY received_unix LIMIT 1) RETURNING id",
                params![now_unix()],
                |r| r.get(0),
            )
            .optional()?
        };
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// The instance files of a study.
    pub fn input_files(&self, row: &StudyRow) -> Result<Vec<PathBuf>, StoreError> {
        let db = self.db();
        let mut st = db.prepare("SELECT name FROM instances WHERE study_id = ?1 ORDER BY name")?;
        let names = st
            .query_map(params![row.id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let dir = self.study_dir(&row.dir);
        Ok(names
            .into_iter()
            .map(|n| {
                if row.kind == InputKind::Dicom {
                    dir.join("instances").join(n)
                } else {
                    dir.join(n)
                }
            })
            .collect())
    }

    /// Record a finished scoring. When new input arrived meanwhile the study goes back to
    /// `receiving` (DICOM: wait for the rest) or `queued`.
    pub fn finish(&self, id: &str, outcome: Outcome, forward: bool) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE studies SET \
               status = CASE WHEN rescore = 1 THEN (CASE WHEN kind = 'dicom' THEN 'receiving' ELSE 'queued' END) ELSE 'done' END, \
               rescore = 0, error = NULL, p_hemorrhage = ?2, hemorrhage = ?3, review = ?4, \
               scored_with_clinical = ?5, updated_unix = ?6, \
               forward_status = CASE WHEN ?7 THEN 'pending' ELSE NULL END, \
               forward_attempts = 0, forward_error = NULL, forward_next_unix = ?6 \
             WHERE id = ?1",
            params![
                id,
                outcome.p_hemorrhage,
                outcome.hemorrhage,
                outcome.review,
                outcome.with_clinical,
                now_unix(),
                forward
            ],
        )?;
        Ok(())
    }

    /// Record a failed scoring (the cause names no patient). `retry`: ours and worth another
    /// try (queued again while attempts remain).
    pub fn fail(
        &self,
        id: &str,
        error: &str,
        retry: bool,
        max_attempts: u32,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE studies SET error = ?2, updated_unix = ?3, \
               status = CASE WHEN rescore = 1 OR (?4 AND attempts < ?5) THEN 'queued' ELSE 'failed' END, \
               rescore = 0 \
             WHERE id = ?1",
            params![id, error, now_unix(), retry, max_attempts],
        )?;
        Ok(())
    }

    /// The next study whose results are due to be forwarded.
    pub fn next_forward(&self) -> Result<Option<StudyRow>, StoreError> {
        let id: Option<String> = self
            .db()
            .query_row(
                "SELECT id FROM studies WHERE status = 'done' AND forward_status = 'pending' \
                 AND COALESCE(forward_next_unix, 0) <= ?1 ORDER BY updated_unix LIMIT 1",
                params![now_unix()],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// Record a forwarding attempt: sent, or failed with the next try after `retry_in_s`
    /// (`None`: no more tries).
    pub fn forward_result(
        &self,
        id: &str,
        error: Option<&str>,
        retry_in_s: Option<f64>,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        let status = match (error, retry_in_s) {
            (None, _) => "sent",
            (Some(_), Some(_)) => "pending",
            (Some(_), None) => "failed",
        };
        self.db().execute(
            "UPDATE studies SET forward_status = ?2, forward_error = ?3, \
               forward_attempts = forward_attempts + 1, forward_next_unix = ?4, updated_unix = ?5 \
             WHERE id = ?1",
            params![id, status, error, now + retry_in_s.unwrap_or(0.0), now],
        )?;
        Ok(())
    }
}
