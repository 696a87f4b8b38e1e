//! Series assembly: group instances by SeriesInstanceUID, choose a series (the rule is
//! recorded), and the entry points for files and for instances held in memory.

#[allow(unused_imports)]
use super::*;

pub(super) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(super) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(super) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

pub(super) fn orientation_name(iop: Option<[f64; 6]>) -> &'static str {
    let Some(iop) = iop else { return "unknown" };
    let n = cross([iop[0], iop[1], iop[2]], [iop[3], iop[4], iop[5]]);
    let l = norm(n);
    if l < 1e-6 {
        return "unknown";
    }
    let a = [n[0].abs() / l, n[1].abs() / l, n[2].abs() / l];
    if a[2] > 0.8 {
        "axial"
    } else if a[1] > 0.8 {
        "coronal"
    } else if a[0] > 0.8 {
        "sagittal"
    } else {
        "oblique"
    }
}

pub(super) struct Series {
    pub(super) uid: String,
    pub(super) headers: Vec<Header>,
}

impl Series {
    pub(super) fn frames(&self) -> usize {
        self.headers.iter().map(|h| h.pix.frames).sum()
    }
    pub(super) fn first(&self) -> &Header {
        &self.headers[0]
    }
    pub(super) fn thickness(&self) -> Option<f64> {
        self.first()
            .slice_thickness
            .filter(|t| *t > 0.0 && *t < 20.0)
    }
    pub(super) fn is_axial_ct(&self) -> bool {
        let h = self.first();
        h.modality == "CT" && orientation_name(h.frame_geom[0].1) == "axial"
    }
    /// Soft-tissue ("standard") kernels show blood best; sharp bone/lung kernels rank last.
    pub(super) fn kernel_rank(&self) -> u8 {
        match &self.first().kernel {
            None => 1,
            Some(k) => {
                let k = k.to_ascii_uppercase();
                if [
                    "BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "H70", "H60", "B70", "B60",
                ]
                .iter()
                .any(|s| k.contains(s))
                {
                    2
                } else {
                    0
                }
            }
        }
    }
    pub(super) fn unusable(&self) -> Option<String> {
        self.headers.iter().find_map(unusable_reason)
    }
    pub(super) fn summary(&self, chosen: bool) -> SeriesSummary {
        let h = self.first();
        SeriesSummary {
            uid: self.uid.clone(),
            modality: h.modality.clone(),
            description: h.description.clone(),
            files: self.headers.len(),
            frames: self.frames(),
            rows: h.pix.rows,
            cols: h.pix.cols,
            orientation: orientation_name(h.frame_geom[0].1).into(),
            slice_thickness: h.slice_thickness,
            kernel: h.kernel.clone(),
            unusable: self.unusable(),
            chosen,
            mr: h.mr.as_ref().map(crate::mr::classify),
        }
    }
}

/// Pick a series: axial CT first, then most slices, then thinnest plausible slice thickness,
/// then a soft-tissue kernel; ties go to the smallest UID (deterministic). Returns the index
/// and the rule that decided.
pub(super) fn choose(series: &[Series]) -> Option<(usize, String)> {
    let usable: Vec<usize> = (0..series.len())
        .filter(|&i| series[i].unusable().is_none())
        .collect();
    if usable.is_empty() {
        return None;
    }
    if usable.len() == 1 {
        let why = if series.len() == 1 {
            "only series"
        } else {
            "only usable series (others unusable)"
        };
        return Some((usable[0], why.into()));
    }
    let key = |i: usize| {
        let s = &series[i];
        (
            !s.is_axial_ct(),
            std::cmp::Reverse(s.frames()),
            (s.thickness().unwrap_or(f64::INFINITY) * 1000.0) as i64,
            s.kernel_rank(),
        )
    };
    let mut order = usable.clone();
    order.sort_by(|&a, &b| key(a).cmp(&key(b)).then(series[a].uid.cmp(&series[b].uid)));
    let (a, b) = (key(order[0]), key(order[1]));
    let rule = if a.0 != b.0 {
        "axial CT first"
    } else if a.1 != b.1 {
        "most slices"
    } else if a.2 != b.2 {
        "thinnest slice thickness"
    } else if a.3 != b.3 {
        "soft-tissue kernel over sharp kernel"
    } else {
        "tie: smallest SeriesInstanceUID"
    };
    Some((order[0], rule.into()))
}

pub(super) fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImagingError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImagingError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out)?;
        } else {
            out.push(e);
        }
    }
    Ok(())
}

pub(super) fn display_root(paths: &[PathBuf]) -> PathBuf {
    match paths {
        [one] => one.clone(),
        [] => PathBuf::from("(no input)"),
        many => PathBuf::from(format!("{} (+{} more)", many[0].display(), many.len() - 1)),
    }
}

/// Instances held in memory (a network receiver's), one study.
#[derive(Debug)]
pub struct MemoryInstance {
    /// Names the instance in errors and skip lists (e.g. `"request 7/instance 12"`); never a
    /// patient identifier.
    pub name: String,
    pub data: MemoryData,
}

impl MemoryInstance {
    /// The instance's Modality (0008,0060), when it parses and has one (a peek, for routing a
    /// study before it is read; errors are left to the reader).
    pub fn modality(&self) -> Option<String> {
        let get = |o: &Obj| text(o, tags::MODALITY);
        match &self.data {
            MemoryData::Object(o) => get(o),
            MemoryData::Bytes(b) => open_dicom_bytes(Path::new(&self.name), b)
                .ok()
                .and_then(|o| get(&o)),
        }
    }
}

/// An instance's encoded bytes (Part-10, or a bare data set) or a parsed object.
#[derive(Debug)]
pub enum MemoryData {
    Bytes(Vec<u8>),
    Object(Box<Obj>),
}

/// One input instance of [`read_instances`].
enum Instance {
    File(PathBuf),
    Memory(MemoryInstance),
}

/// [`read_series`] of instances held in memory: the same series selection, ordering, geometry
/// checks and value decoding as files, the same errors (named by `study` and each instance's
/// name instead of paths).
pub fn read_series_from_memory(
    study: &str,
    instances: Vec<MemoryInstance>,
    opts: &ReadOptions,
) -> Result<StudyRead, ImagingError> {
    if instances.is_empty() {
        return Err(ImagingError::NoSeries {
            path: PathBuf::from(study),
            reason: "no instances".into(),
        });
    }
    read_instances(
        PathBuf::from(study),
        instances.into_iter().map(Instance::Memory).collect(),
        opts,
    )
}

/// Read a study from files and/or folders (searched recursively): group by series, choose one
/// (see [`ReadOptions`]), decode it to a [`Volume`].
///
/// Non-DICOM files and non-image objects are skipped (listed in [`StudyRead::skipped`] and in
/// the volume's warnings) when more than one file is read; a DICOM file that is truncated or
/// broken is an error, because a missing slice would silently change the volume.
pub fn read_series(paths: &[PathBuf], opts: &ReadOptions) -> Result<StudyRead, ImagingError> {
    let root = display_root(paths);
    let files = collect_files(paths)?;
    read_instances(root, files.into_iter().map(Instance::File).collect(), opts)
}

/// Open every instance and group the images by SeriesInstanceUID. Non-DICOM files and
/// non-image objects are skipped (with the reason) when more than one instance is read.
fn group_instances(
    root: &Path,
    instances: Vec<Instance>,
) -> Result<(Vec<Series>, Vec<SkippedFile>), ImagingError> {
    let n_instances = instances.len();
    let single = n_instances == 1;
    let mut skipped = Vec::new();
    let mut groups: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    let mut first_err: Option<ImagingError> = None;
    for inst in instances {
        let (path, opened) = match inst {
            Instance::File(p) => {
                let o = open_dicom(&p);
                (p, o)
            }
            Instance::Memory(m) => {
                let p = root.join(&m.name);
                let o = match m.data {
                    MemoryData::Bytes(b) => open_dicom_bytes(&p, &b),
                    MemoryData::Object(o) => Ok(*o),
                };
                (p, o)
            }
        };
        let f = &path;
        let obj = match opened {
            Ok(o) => o,
            Err(e @ ImagingError::NotDicom { .. }) if !single => {
                tracing::warn!("skipping {}: {e}", f.display());
                skipped.push(SkippedFile {
                    path: f.display().to_string(),
                    reason: e.to_string(),
                });
                first_err.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        match read_header(f, obj) {
            Ok(h) => groups.entry(h.series_uid.clone()).or_default().push(h),
            Err(e @ ImagingError::NotImage { .. }) if !single => {
                tracing::warn!("skipping {}: {e}", f.display());
                skipped.push(SkippedFile {
                    path: f.display().to_string(),
                    reason: e.to_string(),
                });
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if groups.is_empty() {
        return Err(match first_err {
            Some(e) if skipped.len() == 1 => e,
            _ => ImagingError::NoSeries {
                path: root.to_path_buf(),
                reason: format!(
                    "{} file(s) looked at, {} skipped",
                    n_instances,
                    skipped.len()
                ),
            },
        });
    }
    let series: Vec<Series> = groups
        .into_iter()
        .map(|(uid, headers)| Series { uid, headers })
        .collect();
    Ok((series, skipped))
}

fn read_instances(
    root: PathBuf,
    instances: Vec<Instance>,
    opts: &ReadOptions,
) -> Result<StudyRead, ImagingError> {
    let (series, skipped) = group_instances(&root, instances)?;
    let (idx, rule) = match &opts.series_uid {
        Some(uid) => {
            let i = series.iter().position(|s| &s.uid == uid).ok_or_else(|| {
                ImagingError::SeriesNotFound {
                    path: root.clone(),
                    uid: uid.clone(),
                    available: series
                        .iter()
                        .map(|s| s.uid.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            (i, "series_uid option".to_string())
        }
        None => match choose(&series) {
            Some(c) => c,
            None => {
                let s = &series[0];
                let h = s.first();
                return Err(ImagingError::Unsupported {
                    path: h.path.clone(),
                    reason: s.unusable().unwrap_or_default(),
                });
            }
        },
    };
    if let Some(r) = series[idx].unusable() {
        let h = series[idx]
            .headers
            .iter()
            .find(|h| unusable_reason(h).is_some())
            .unwrap_or(series[idx].first());
        return Err(ImagingError::Unsupported {
            path: h.path.clone(),
            reason: r,
        });
    }
    let summaries: Vec<SeriesSummary> = series
        .iter()
        .enumerate()
        .map(|(i, s)| s.summary(i == idx))
        .collect();
    let chosen = series.into_iter().nth(idx).expect("index from the list");
    let mut source = super::identity::SourceStudy::from_headers(&chosen.uid, &chosen.headers);
    let (mut volume, slice_instances) = build_volume(chosen, opts, &root)?;
    source.slice_instances = slice_instances;
    volume
        .provenance
        .notes
        .insert(0, format!("series chosen by rule: {rule}"));
    if summaries.len() > 1 {
        volume.provenance.notes.push(format!(
            "{} other series present (see series list)",
            summaries.len() - 1
        ));
    }
    for s in &skipped {
        volume
            .provenance
            .warnings
            .push(format!("skipped {}: {}", s.path, s.reason));
    }
    Ok(StudyRead {
        volume,
        chosen_rule: rule,
        series: summaries,
        skipped,
        source: Some(source),
    })
}

/// The Modality (0008,0060) of the first DICOM file under `paths` that parses (one header,
/// no pixels): which reader a study needs, before reading it. `None` when none parses or it
/// has no Modality.
pub fn peek_modality(paths: &[PathBuf]) -> Option<String> {
    collect_files(paths)
        .ok()?
        .iter()
        .find_map(|f| open_dicom(f).ok())
        .and_then(|o| text(&o, tags::MODALITY))
}

/// One MR sequence of a study, decoded.
#[derive(Debug, Clone)]
pub struct MrSequenceRead {
    pub sequence: crate::mr::MrSequence,
    /// Stored intensities on the series' own grid (sequences are brought to one grid by the
    /// preprocessing, through world coordinates: [`crate::transforms::resample_onto`]).
    pub volume: Volume,
    pub series_uid: String,
    /// Why this series is this sequence, and why it was chosen among others of the same one.
    pub rule: String,
}

/// An MR study read sequence by sequence.
#[derive(Debug, Clone)]
pub struct MrStudyRead {
    /// The sequences found, in [`crate::mr::MrSequence::ALL`] order.
    pub sequences: Vec<MrSequenceRead>,
    /// The sequences the model reads that the study lacks (masked downstream, never imputed).
    pub missing: Vec<crate::mr::MrSequence>,
    /// Every series found, each with its sequence decision; the chosen ones marked.
    pub series: Vec<SeriesSummary>,
    pub skipped: Vec<SkippedFile>,
    /// The study's identity, with the instances of the first sequence read.
    pub source: Option<SourceStudy>,
}

/// Read an MR study from files and/or folders: every series is told apart by its acquisition
/// attributes ([`crate::mr::classify`]); per sequence the series with the most slices (then
/// the thinnest, then the smallest UID) is decoded. A study with none of the sequences the
/// model reads is an error that lists what each series was taken for.
pub fn read_mr_study(paths: &[PathBuf], opts: &ReadOptions) -> Result<MrStudyRead, ImagingError> {
    let root = display_root(paths);
    let files = collect_files(paths)?;
    read_mr_instances(root, files.into_iter().map(Instance::File).collect(), opts)
}

/// [`read_mr_study`] of instances held in memory (a network receiver's), named by `study`.
pub fn read_mr_study_from_memory(
    study: &str,
    instances: Vec<MemoryInstance>,
    opts: &ReadOptions,
) -> Result<MrStudyRead, ImagingError> {
    if instances.is_empty() {
        return Err(ImagingError::NoSeries {
            path: PathBuf::from(study),
            reason: "no instances".into(),
        });
    }
    read_mr_instances(
        PathBuf::from(study),
        instances.into_iter().map(Instance::Memory).collect(),
        opts,
    )
}

fn read_mr_instances(
    root: PathBuf,
    instances: Vec<Instance>,
    opts: &ReadOptions,
) -> Result<MrStudyRead, ImagingError> {
    use crate::mr::MrSequence;
    let (series, skipped) = group_instances(&root, instances)?;
    let decision = |s: &Series| s.first().mr.as_ref().map(crate::mr::classify);
    let mut chosen: Vec<(MrSequence, usize, String)> = Vec::new();
    for q in MrSequence::ALL {
        let mut candidates: Vec<usize> = (0..series.len())
            .filter(|&i| {
                series[i].unusable().is_none()
                    && decision(&series[i]).and_then(|d| d.sequence) == Some(q)
            })
            .collect();
        let key = |i: usize| {
            (
                std::cmp::Reverse(series[i].frames()),
                (series[i].thickness().unwrap_or(f64::INFINITY) * 1000.0) as i64,
            )
        };
        candidates.sort_by(|&a, &b| key(a).cmp(&key(b)).then(series[a].uid.cmp(&series[b].uid)));
        if let Some(&best) = candidates.first() {
            let why = decision(&series[best]).map(|d| d.rule).unwrap_or_default();
            let among = match candidates.get(1) {
                None => String::new(),
                Some(&next) if key(best).0 != key(next).0 => {
                    format!("; most slices of {} {q} series", candidates.len())
                }
                Some(&next) if key(best).1 != key(next).1 => {
                    format!("; thinnest of {} {q} series", candidates.len())
                }
                Some(_) => format!("; tie of {} {q} series: smallest UID", candidates.len()),
            };
            chosen.push((q, best, format!("{why}{among}")));
        }
    }
    let summaries: Vec<SeriesSummary> = series
        .iter()
        .enumerate()
        .map(|(i, s)| s.summary(chosen.iter().any(|c| c.1 == i)))
        .collect();
    if chosen.is_empty() {
        let found = summaries
            .iter()
            .map(|s| {
                let what = match (&s.mr, &s.unusable) {
                    (_, Some(u)) => format!("unusable: {u}"),
                    (Some(d), None) => d.rule.clone(),
                    (None, None) => format!("modality {}", s.modality),
                };
                format!("{:?}: {what}", s.description)
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ImagingError::NoSeries {
            path: root,
            reason: format!("no MR series of a sequence the model reads ({found})"),
        });
    }
    let missing: Vec<MrSequence> = MrSequence::ALL
        .into_iter()
        .filter(|q| !chosen.iter().any(|c| c.0 == *q))
        .collect();
    let mut slots: Vec<Option<Series>> = series.into_iter().map(Some).collect();
    let mut sequences = Vec::with_capacity(chosen.len());
    let mut source = None;
    for (q, i, rule) in chosen {
        let s = slots[i].take().expect("each series chosen once");
        let uid = s.uid.clone();
        let mut src = super::identity::SourceStudy::from_headers(&uid, &s.headers);
        let (mut volume, slice_instances) = build_volume(s, opts, &root)?;
        src.slice_instances = slice_instances;
        source.get_or_insert(src);
        volume
            .provenance
            .notes
            .insert(0, format!("MR sequence {q}: {rule}"));
        sequences.push(MrSequenceRead {
            sequence: q,
            volume,
            series_uid: uid,
            rule,
        });
    }
    Ok(MrStudyRead {
        sequences,
        missing,
        series: summaries,
        skipped,
        source,
    })
}
