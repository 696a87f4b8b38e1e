//! MR sequences: which contrast a series is, told from its acquisition attributes.
//!
//! Why attributes first: SeriesDescription is free text typed at the console ("t2_tse_tra",
//! "AX FLAIR", "Routine Brain 3"), renamed by anonymisers and translated by sites; the physics
//! that sets a series' contrast is in ScanningSequence, RepetitionTime, EchoTime and
//! InversionTime, which every scanner writes. The description is the fallback when those are
//! missing, and the one tie-breaker attributes cannot settle (SWI is a gradient echo with a
//! particular reconstruction, recorded in ImageType or the description).
//!
//! The thresholds are the textbook weighting rules (short TR + short TE = T1; long TR + long
//! TE = T2; inversion with TI near the null of CSF = FLAIR; gradient echo with long TE and
//! small flip = T2*): Bitar et al., "MR pulse sequences: what every radiologist wants to
//! know but is afraid to ask", RadioGraphics 2006;26:513-537. See docs/IMAGING.md.

use serde::{Deserialize, Serialize};

/// The MR contrasts the model reads, in the order of its input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MrSequence {
    /// T1-weighted (spin echo, spoiled gradient echo, IR-prepared 3-D gradient echo).
    T1,
    /// T2-weighted (fast/turbo spin echo).
    T2,
    /// T2-weighted fluid-attenuated inversion recovery: CSF dark, subarachnoid blood bright.
    Flair,
    /// T2*-weighted gradient echo: deoxyhaemoglobin and haemosiderin dark, blooming.
    #[serde(rename = "t2star_gre")]
    T2StarGre,
    /// Susceptibility-weighted imaging: the most sensitive to blood products.
    Swi,
}

impl MrSequence {
    /// Every sequence, in channel order.
    pub const ALL: [MrSequence; 5] = [
        MrSequence::T1,
        MrSequence::T2,
        MrSequence::Flair,
        MrSequence::T2StarGre,
        MrSequence::Swi,
    ];

    /// Short name used in file names, JSON and reports.
    pub fn name(self) -> &'static str {
        match self {
            MrSequence::T1 => "t1",
            MrSequence::T2 => "t2",
            MrSequence::Flair => "flair",
            MrSequence::T2StarGre => "t2star_gre",
            MrSequence::Swi => "swi",
        }
    }

    /// Parse [`MrSequence::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == s)
    }

    /// Index of the sequence in [`MrSequence::ALL`] (its input channel).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|q| *q == self).expect("in ALL")
    }

    /// Both sequences that show susceptibility (blood products as signal voids).
    pub fn is_susceptibility(self) -> bool {
        matches!(self, MrSequence::T2StarGre | MrSequence::Swi)
    }
}

/// How the voxels of a sequence are combined where a coarser grid takes several of them
/// (thin SWI slices onto a thick reference slab, then the study onto the model grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MrReduction {
    /// Every sequence averaged over the coarse voxel.
    #[default]
    Mean,
    /// The susceptibility sequences ([`MrSequence::is_susceptibility`]) by their minimum, the
    /// others averaged. Why: on T2*-GRE and SWI the finding is a signal void, and a void
    /// smaller than the coarse voxel averaged with the parenchyma around it fades to a grey
    /// that noise hides; the minimum keeps it black. It is how radiologists read SWI, as a
    /// minimum-intensity projection over a slab (Haacke et al., AJNR 2009;30:19-30). Not the
    /// default: on the synthetic cohort at the 16 × 64² grid it found small bleeds less well
    /// than the mean (docs/RESULTS.md, "MRI").
    SusceptibilityMinimum,
}

impl MrReduction {
    /// How `sequence`'s voxels are combined under this reduction.
    pub fn footprint(self, sequence: MrSequence) -> crate::transforms::Footprint {
        match self {
            MrReduction::SusceptibilityMinimum if sequence.is_susceptibility() => {
                crate::transforms::Footprint::Minimum
            }
            _ => crate::transforms::Footprint::Mean,
        }
    }

    /// For `skip_serializing_if`: the default is not written, so configs and cards from
    /// before the choice existed (which averaged) keep their bytes and cache keys.
    pub fn is_mean(&self) -> bool {
        *self == MrReduction::Mean
    }
}

impl std::fmt::Display for MrSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The acquisition attributes of one MR series that decide its contrast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MrAcquisition {
    /// ScanningSequence (0018,0020) values: SE, IR, GR, EP, RM.
    pub scanning_sequence: Vec<String>,
    /// SequenceVariant (0018,0021): SK, MTC, SS, TRSS, SP, MP, OSP, NONE.
    pub sequence_variant: Vec<String>,
    /// ImageType (0008,0008) values.
    pub image_type: Vec<String>,
    /// RepetitionTime (0018,0080), ms.
    pub repetition_time_ms: Option<f64>,
    /// EchoTime (0018,0081), ms.
    pub echo_time_ms: Option<f64>,
    /// InversionTime (0018,0082), ms.
    pub inversion_time_ms: Option<f64>,
    /// FlipAngle (0018,1314), degrees.
    pub flip_angle_deg: Option<f64>,
    /// SeriesDescription (0008,103E).
    pub description: String,
    /// SequenceName (0018,0024), e.g. `*tse2d1_15`, `*swi3d1r` (Enhanced MR: PulseSequenceName).
    pub sequence_name: String,
    /// AcquisitionContrast (0008,9209) of Enhanced MR: the scanner's own statement of the
    /// weighting (`T1`, `T2`, `FLUID_ATTENUATED`, `T2_STAR`, `PROTON_DENSITY`, `DIFFUSION`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acquisition_contrast: Vec<String>,
}

/// What the rule decided for one series, and why (shown in `inspect` and `prediction.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceDecision {
    /// `None`: a contrast the model does not read (diffusion, PD, STIR, localiser, …).
    pub sequence: Option<MrSequence>,
    pub rule: String,
}

fn has(values: &[String], what: &str) -> bool {
    values.iter().any(|v| v.trim().eq_ignore_ascii_case(what))
}

fn decided(sequence: Option<MrSequence>, rule: impl Into<String>) -> SequenceDecision {
    SequenceDecision {
        sequence,
        rule: rule.into(),
    }
}

/// ImageType values (3 and 4) of images whose frames are not one structural volume: time
/// series, projections, parametric maps, subtractions, multi-echo sets.
const NOT_ONE_STRUCTURAL_VOLUME: &[&str] = &[
    "FMRI",
    "DYNAMIC",
    "PERFUSION",
    "ANGIO",
    "CINE",
    "MULTIECHO",
    "MAX_IP",
    "T1_MAP",
    "T2_MAP",
    "T2_STAR_MAP",
    "PROTON_DENSITY_MAP",
    "SUBTRACTION",
    "VELOCITY",
];

/// Tell a series' contrast from its acquisition attributes (see the module doc).
pub fn classify(a: &MrAcquisition) -> SequenceDecision {
    let text = format!("{} {}", a.description, a.sequence_name).to_ascii_lowercase();
    let text_has = |ws: &[&str]| ws.iter().any(|w| text.contains(w));
    // Derived or non-anatomical images first: they can carry any TR/TE.
    if has(&a.image_type, "DIFFUSION")
        || has(&a.image_type, "ADC")
        || has(&a.image_type, "TRACEW")
        || text_has(&["dwi", "diffusion", "adc", "trace"])
    {
        return decided(None, "diffusion (ImageType or description): not read");
    }
    if has(&a.image_type, "LOCALIZER") || text_has(&["localizer", "localiser", "scout"]) {
        return decided(None, "localiser: not read");
    }
    // Time series, projections, maps and multi-echo sets (ImageType values 3 and 4, PS3.3
    // C.8.16.1): their frames are not one structural volume, whatever contrast they carry.
    if let Some(t) = NOT_ONE_STRUCTURAL_VOLUME
        .iter()
        .find(|t| has(&a.image_type, t))
    {
        return decided(
            None,
            format!("ImageType {t}: not one structural volume, not read"),
        );
    }
    // SWI is a gradient echo; what makes it SWI is the phase-weighted reconstruction, which
    // only ImageType or the sequence name/description record.
    let swi_by_type = ["SWI", "MIN IP", "MIN_IP", "MNIP"]
        .iter()
        .any(|t| has(&a.image_type, t));
    let swi_by_name = text_has(&["swi", "swan", "venobold", "susceptibility"]);
    // Enhanced MR says the weighting itself (PS3.3 C.8.13.1.1.1). MIXED says the file's frames
    // differ in contrast, so they are not one sequence's volume; UNKNOWN leaves it to the
    // physics below.
    for c in &a.acquisition_contrast {
        let said = |q: Option<MrSequence>| {
            decided(
                q,
                format!(
                    "AcquisitionContrast {c}{}",
                    if q.is_none() { ": not read" } else { "" }
                ),
            )
        };
        match c.to_ascii_uppercase().as_str() {
            "T1" => return said(Some(MrSequence::T1)),
            "T2" => return said(Some(MrSequence::T2)),
            "FLUID_ATTENUATED" => return said(Some(MrSequence::Flair)),
            "T2_STAR" if swi_by_type || swi_by_name => {
                return decided(
                    Some(MrSequence::Swi),
                    format!("AcquisitionContrast {c} with SWI reconstruction"),
                );
            }
            "T2_STAR" => return said(Some(MrSequence::T2StarGre)),
            "PROTON_DENSITY" | "DIFFUSION" | "STIR" | "PERFUSION" | "FLOW_ENCODED" | "TOF"
            | "TAGGING" => return said(None),
            "MIXED" => {
                return decided(
                    None,
                    "AcquisitionContrast MIXED: frames of several contrasts in one file, not read",
                );
            }
            _ => {}
        }
    }
    let gr = has(&a.scanning_sequence, "GR");
    let ir = has(&a.scanning_sequence, "IR");
    let se = has(&a.scanning_sequence, "SE");
    let (tr, te, ti) = (a.repetition_time_ms, a.echo_time_ms, a.inversion_time_ms);
    if gr && !ir {
        if swi_by_type {
            return decided(
                Some(MrSequence::Swi),
                "gradient echo with SWI reconstruction (ImageType)",
            );
        }
        if swi_by_name {
            return decided(
                Some(MrSequence::Swi),
                "gradient echo named SWI (SequenceName or SeriesDescription)",
            );
        }
        match (te, a.flip_angle_deg) {
            (Some(te), flip) if te >= 10.0 && flip.is_none_or(|f| f <= 45.0) => {
                return decided(
                    Some(MrSequence::T2StarGre),
                    format!("gradient echo, TE {te} ms >= 10, small flip: T2*-weighted"),
                );
            }
            (Some(te), _) if te < 10.0 && tr.is_some_and(|tr| tr < 1000.0) => {
                return decided(
                    Some(MrSequence::T1),
                    format!("spoiled gradient echo, TE {te} ms < 10, short TR: T1-weighted"),
                );
            }
            _ => {}
        }
    }
    if ir && let Some(ti) = ti {
        if ti >= 1500.0 {
            return decided(
                Some(MrSequence::Flair),
                format!("inversion recovery, TI {ti} ms >= 1500 (CSF nulled): FLAIR"),
            );
        }
        if (300.0..1500.0).contains(&ti) {
            return decided(
                Some(MrSequence::T1),
                format!("inversion recovery, TI {ti} ms in 300-1500: T1-weighted"),
            );
        }
        return decided(
            None,
            format!("inversion recovery, TI {ti} ms < 300 (fat nulled, STIR): not read"),
        );
    }
    if (se || ir) && !gr {
        match (tr, te) {
            (Some(tr), Some(te)) if tr < 1200.0 && te < 30.0 => {
                return decided(
                    Some(MrSequence::T1),
                    format!("spin echo, TR {tr} ms < 1200, TE {te} ms < 30: T1-weighted"),
                );
            }
            (Some(tr), Some(te)) if tr >= 2000.0 && te >= 60.0 => {
                return decided(
                    Some(MrSequence::T2),
                    format!("spin echo, TR {tr} ms >= 2000, TE {te} ms >= 60: T2-weighted"),
                );
            }
            (Some(tr), Some(te)) if tr >= 2000.0 && te < 40.0 => {
                return decided(
                    None,
                    format!(
                        "spin echo, long TR {tr} ms, short TE {te} ms: proton density, not read"
                    ),
                );
            }
            _ => {}
        }
    }
    // Attributes missing or in between: the description, as a last resort (stated).
    let by_text = [
        (&["flair", "dark fluid", "tirm"][..], MrSequence::Flair),
        (&["swi", "swan"][..], MrSequence::Swi),
        (
            &["t2*", "t2star", "gre", "hemo", "fl2d"][..],
            MrSequence::T2StarGre,
        ),
        (&["t2", "tse"][..], MrSequence::T2),
        (&["t1", "mprage", "spgr", "bravo"][..], MrSequence::T1),
    ];
    for (words, q) in by_text {
        if text_has(words) {
            return decided(
                Some(q),
                format!(
                    "acquisition attributes inconclusive; description says {}",
                    q.name()
                ),
            );
        }
    }
    decided(
        None,
        format!(
            "not recognised (ScanningSequence {:?}, TR {:?}, TE {:?}, TI {:?})",
            a.scanning_sequence.join("\\"),
            tr,
            te,
            ti
        ),
    )
}

/// Typical acquisition attributes of each sequence (1.5 T clinical brain protocol), used by
/// writers of synthetic MR series; [`classify`] must recover the sequence from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MrProtocol {
    pub sequence: MrSequence,
    pub scanning_sequence: &'static str,
    pub sequence_variant: &'static str,
    pub sequence_name: &'static str,
    pub series_description: &'static str,
    pub image_type: &'static str,
    pub repetition_time_ms: f64,
    pub echo_time_ms: f64,
    pub inversion_time_ms: Option<f64>,
    pub flip_angle_deg: f64,
    pub echo_train_length: u32,
    pub acquisition_3d: bool,
}

impl MrSequence {
    /// The protocol a synthetic series of this sequence is written with.
    pub fn protocol(self) -> MrProtocol {
        let p = |scan, variant, name, desc, itype, tr, te, ti, flip, etl, three_d| MrProtocol {
            sequence: self,
            scanning_sequence: scan,
            sequence_variant: variant,
            sequence_name: name,
            series_description: desc,
            image_type: itype,
            repetition_time_ms: tr,
            echo_time_ms: te,
            inversion_time_ms: ti,
            flip_angle_deg: flip,
            echo_train_length: etl,
            acquisition_3d: three_d,
        };
        match self {
            MrSequence::T1 => p(
                "SE",
                "SP",
                "*se2d1",
                "AX T1 SE",
                "ORIGINAL\\PRIMARY\\OTHER",
                500.0,
                12.0,
                None,
                90.0,
                1,
                false,
            ),
            MrSequence::T2 => p(
                "SE",
                "SK\\SP",
                "*tse2d1_15",
                "AX T2 TSE",
                "ORIGINAL\\PRIMARY\\OTHER",
                4500.0,
                95.0,
                None,
                150.0,
                15,
                false,
            ),
            MrSequence::Flair => p(
                "SE\\IR",
                "SK\\SP\\MP",
                "*tir2d1_13",
                "AX FLAIR",
                "ORIGINAL\\PRIMARY\\OTHER",
                9000.0,
                90.0,
                Some(2500.0),
                150.0,
                13,
                false,
            ),
            MrSequence::T2StarGre => p(
                "GR",
                "SP",
                "*fl2d1",
                "AX T2* GRE",
                "ORIGINAL\\PRIMARY\\OTHER",
                700.0,
                20.0,
                None,
                20.0,
                1,
                false,
            ),
            MrSequence::Swi => p(
                "GR",
                "SP",
                "*swi3d1r",
                "AX SWI",
                "ORIGINAL\\PRIMARY\\OTHER\\SWI",
                49.0,
                40.0,
                None,
                15.0,
                1,
                true,
            ),
        }
    }
}

impl MrProtocol {
    /// The attributes a reader sees in a series written with this protocol.
    pub fn acquisition(&self) -> MrAcquisition {
        let split = |s: &str| s.split('\\').map(str::to_string).collect::<Vec<_>>();
        MrAcquisition {
            scanning_sequence: split(self.scanning_sequence),
            sequence_variant: split(self.sequence_variant),
            image_type: split(self.image_type),
            repetition_time_ms: Some(self.repetition_time_ms),
            echo_time_ms: Some(self.echo_time_ms),
            inversion_time_ms: self.inversion_time_ms,
            flip_angle_deg: Some(self.flip_angle_deg),
            description: self.series_description.into(),
            sequence_name: self.sequence_name.into(),
            acquisition_contrast: Vec::new(),
        }
    }
}

/// Which sequence's grid the others are resampled onto: the first present of FLAIR, T2, T1,
/// T2*-GRE, SWI. The 2-D T2-weighted sequences cover the whole brain on every protocol;
/// the 3-D SWI slab often stops short of the vertex or the skull base.
pub const REFERENCE_ORDER: [MrSequence; 5] = [
    MrSequence::Flair,
    MrSequence::T2,
    MrSequence::T1,
    MrSequence::T2StarGre,
    MrSequence::Swi,
];

/// Signal below this fraction of the 99.5th percentile is background (air, noise floor).
pub const FOREGROUND_FRACTION: f32 = 0.1;
/// Normalised values are clipped to `0..=NORMALISED_MAX` (brain parenchyma ≈ 1).
pub const NORMALISED_MAX: f32 = 4.0;

/// One sequence on the study's common grid, intensity-normalised.
#[derive(Debug, Clone)]
pub struct MrChannel {
    pub sequence: MrSequence,
    /// Values divided by the sequence's foreground median (parenchyma ≈ 1), clipped to
    /// `0..=NORMALISED_MAX`; `Modality::Other("mr-normalised")`.
    pub volume: crate::Volume,
    /// Fraction of the common grid this sequence's field of view covers (the rest is 0).
    pub coverage: f64,
    /// The foreground median the values were divided by (stored units).
    pub scale: f32,
    /// The bias field divided out before normalising, as its smallest and largest value over
    /// the foreground (`None`: not corrected — not asked for, or too little foreground to fit
    /// one).
    pub bias_field: Option<(f32, f32)>,
}

/// An MR study's sequences on one grid.
#[derive(Debug, Clone)]
pub struct MrStack {
    pub reference: MrSequence,
    pub grid: crate::Grid,
    /// Present sequences, in [`MrSequence::ALL`] order.
    pub channels: Vec<MrChannel>,
    /// Sequences absent from the study (masked by the model, never imputed).
    pub missing: Vec<MrSequence>,
    /// How the sequences were brought onto the grid (the model grid must follow suit).
    pub reduction: MrReduction,
    /// The bias-field correction each sequence had before normalising (`None`: none).
    pub bias_correction: Option<crate::bias::BiasCorrectionConfig>,
}

/// The background threshold of an MR volume: [`FOREGROUND_FRACTION`] of its 99.5th
/// percentile (air and the noise floor lie below it). `None` when nothing is positive.
pub fn foreground_threshold(values: &[f32]) -> Option<f32> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * 0.995).round() as usize;
    let p995 = *v.select_nth_unstable_by(i, f32::total_cmp).1;
    (p995 > 0.0).then_some(FOREGROUND_FRACTION * p995)
}

/// Robust per-sequence normalisation: divide by the median of the foreground (voxels above
/// [`foreground_threshold`]), so the arbitrary scale of each series is gone and lesions far
/// brighter or darker than parenchyma do not move the reference (a min-max or mean/SD scaling
/// would). Returns the normalised values and the median.
pub fn normalise_intensity(values: &[f32]) -> (Vec<f32>, f32) {
    let Some(threshold) = foreground_threshold(values) else {
        return (vec![0.0; values.len()], 0.0);
    };
    let mut fg: Vec<f32> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > threshold)
        .collect();
    if fg.is_empty() {
        return (vec![0.0; values.len()], 0.0);
    }
    let m = fg.len() / 2;
    let median = *fg.select_nth_unstable_by(m, f32::total_cmp).1;
    let out = values
        .iter()
        .map(|x| {
            if x.is_finite() {
                (x / median).clamp(0.0, NORMALISED_MAX)
            } else {
                0.0
            }
        })
        .collect();
    (out, median)
}

impl crate::dicom::MrStudyRead {
    /// Bring every sequence onto the reference sequence's grid ([`REFERENCE_ORDER`]) through
    /// world coordinates ([`crate::transforms::resample_onto`], each sequence's footprint
    /// combined as `reduction` says) and normalise each ([`normalise_intensity`], on its own
    /// grid, before resampling), after dividing out its bias field when `bias_correction`
    /// says so ([`crate::bias::correct_bias`] over the [`foreground_threshold`]).
    pub fn on_one_grid(
        &self,
        reduction: MrReduction,
        bias_correction: Option<&crate::bias::BiasCorrectionConfig>,
    ) -> Result<MrStack, crate::transforms::TransformError> {
        let reference = REFERENCE_ORDER
            .into_iter()
            .find(|q| self.sequences.iter().any(|s| s.sequence == *q))
            .ok_or_else(|| crate::transforms::TransformError {
                step: "mr stack".into(),
                reason: "no sequence".into(),
            })?;
        let grid = self
            .sequences
            .iter()
            .find(|s| s.sequence == reference)
            .expect("found above")
            .volume
            .grid();
        let mut channels = Vec::with_capacity(self.sequences.len());
        for s in &self.sequences {
            let (corrected, bias_field) =
                match (bias_correction, foreground_threshold(&s.volume.data)) {
                    (Some(cfg), Some(threshold)) => {
                        match crate::bias::correct_bias(&s.volume, threshold, cfg) {
                            Ok((v, field)) => (std::borrow::Cow::Owned(v), Some(field.range)),
                            // Too small a head for a field (a localiser-like slab): normalised
                            // as it is, `bias_field` empty to say so.
                            Err(crate::bias::BiasError::TooLittleForeground { voxels, .. }) => {
                                tracing::warn!(
                                    sequence = %s.sequence,
                                    voxels,
                                    "bias field not estimated: too little foreground"
                                );
                                (std::borrow::Cow::Borrowed(&s.volume), None)
                            }
                            Err(e) => {
                                return Err(crate::transforms::TransformError {
                                    step: format!("bias-field correction of {}", s.sequence),
                                    reason: e.to_string(),
                                });
                            }
                        }
                    }
                    // Nothing above zero: normalisation makes it all 0, there is no field to fit.
                    _ => (std::borrow::Cow::Borrowed(&s.volume), None),
                };
            let (norm, scale) = normalise_intensity(&corrected.data);
            let mut v =
                s.volume
                    .with_data(norm)
                    .map_err(|e| crate::transforms::TransformError {
                        step: "mr stack".into(),
                        reason: e.to_string(),
                    })?;
            v.modality = crate::Modality::Other("mr-normalised".into());
            let (volume, coverage) = if s.sequence == reference {
                (v, 1.0)
            } else {
                crate::transforms::resample_onto(&v, &grid, 0.0, reduction.footprint(s.sequence))?
            };
            channels.push(MrChannel {
                sequence: s.sequence,
                volume,
                coverage,
                scale,
                bias_field,
            });
        }
        Ok(MrStack {
            reference,
            grid,
            channels,
            missing: self.missing.clone(),
            reduction,
            bias_correction: bias_correction.copied(),
        })
    }
}

/// An MR study as NIfTI files in one folder, one per sequence, named by the sequence
/// (`flair.nii.gz`, or `mr_flair.nii.gz` as `hemorrhagenet synth` writes them; `*_mask.*`
/// files and other names are ignored): NIfTI carries no acquisition attributes, so the file
/// name is the only way to know the contrast, and the rule says so. The geometry comes from
/// each file's affine, so sequences on different grids are brought together as DICOM ones.
pub fn read_nifti_folder(
    dir: &std::path::Path,
) -> Result<crate::dicom::MrStudyRead, crate::ImagingError> {
    let io = |e: std::io::Error| crate::ImagingError::Io {
        path: dir.to_path_buf(),
        error: e,
    };
    let mut found: Vec<(MrSequence, std::path::PathBuf)> = Vec::new();
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::nifti::is_nifti_path(p))
        .collect();
    entries.sort();
    for p in entries {
        if let Some(q) = sequence_of_nifti_name(&p) {
            if found.iter().any(|f| f.0 == q) {
                return Err(crate::ImagingError::NoSeries {
                    path: dir.to_path_buf(),
                    reason: format!("two NIfTI files for sequence {q}"),
                });
            }
            found.push((q, p));
        }
    }
    if found.is_empty() {
        let names: Vec<&str> = MrSequence::ALL.iter().map(|q| q.name()).collect();
        return Err(crate::ImagingError::NoSeries {
            path: dir.to_path_buf(),
            reason: format!(
                "no NIfTI file named by an MR sequence ({}; e.g. flair.nii.gz or mr_flair.nii.gz)",
                names.join(", ")
            ),
        });
    }
    found.sort_by_key(|f| f.0);
    read_nifti_sequences(found)
}

/// Read `path` as an MR study: a folder of NIfTI files named by sequence
/// ([`read_nifti_folder`]), one NIfTI file named by its sequence ([`read_nifti_file`]), or
/// else DICOM — a folder or file whose series are told apart by their acquisition attributes
/// ([`crate::dicom::read_mr_study`]).
pub fn read_mr_path(
    path: &std::path::Path,
) -> Result<crate::dicom::MrStudyRead, crate::ImagingError> {
    if is_nifti_mr_folder(path) {
        read_nifti_folder(path)
    } else if crate::nifti::is_nifti_path(path) {
        read_nifti_file(path)
    } else {
        crate::dicom::read_mr_study(&[path.to_path_buf()], &crate::ReadOptions::default())
    }
}

/// Whether `dir` is a folder holding NIfTI files named by MR sequence (an MR study as
/// NIfTI, [`read_nifti_folder`]); a DICOM folder with a stray `mask.nii.gz` is not.
pub fn is_nifti_mr_folder(dir: &std::path::Path) -> bool {
    dir.is_dir()
        && std::fs::read_dir(dir).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| sequence_of_nifti_name(&e.path()).is_some())
        })
}

/// The sequence a NIfTI file is named for (`flair.nii.gz`, `mr_flair.nii`, …; `*_mask.*` and
/// other names: `None`).
pub fn sequence_of_nifti_name(path: &std::path::Path) -> Option<MrSequence> {
    if !crate::nifti::is_nifti_path(path) {
        return None;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .trim_start_matches("mr_")
        .to_ascii_lowercase();
    MrSequence::from_name(&stem)
}

/// One MR sequence as a single NIfTI file named by it (`flair.nii.gz`): an MR study of that
/// sequence alone, the others missing. A file whose name is no sequence is an error saying
/// how to name it (NIfTI has no acquisition attributes).
pub fn read_nifti_file(
    path: &std::path::Path,
) -> Result<crate::dicom::MrStudyRead, crate::ImagingError> {
    let Some(q) = sequence_of_nifti_name(path) else {
        let names: Vec<&str> = MrSequence::ALL.iter().map(|q| q.name()).collect();
        return Err(crate::ImagingError::NoSeries {
            path: path.to_path_buf(),
            reason: format!(
                "an MR NIfTI file must be named by its sequence ({}; e.g. flair.nii.gz): NIfTI \
                 has no acquisition attributes to tell it by",
                names.join(", ")
            ),
        });
    };
    read_nifti_sequences(vec![(q, path.to_path_buf())])
}

/// Read named NIfTI files (sorted by sequence) as an MR study.
fn read_nifti_sequences(
    found: Vec<(MrSequence, std::path::PathBuf)>,
) -> Result<crate::dicom::MrStudyRead, crate::ImagingError> {
    let opts = crate::NiftiReadOptions {
        modality: Some(crate::Modality::Mr),
        ..Default::default()
    };
    let mut sequences = Vec::with_capacity(found.len());
    for (q, p) in &found {
        sequences.push(crate::dicom::MrSequenceRead {
            sequence: *q,
            volume: crate::nifti::read_volume(p, &opts)?,
            series_uid: String::new(),
            rule: format!("NIfTI file named {q} (NIfTI has no acquisition attributes)"),
        });
    }
    Ok(crate::dicom::MrStudyRead {
        missing: MrSequence::ALL
            .into_iter()
            .filter(|q| !found.iter().any(|f| f.0 == *q))
            .collect(),
        sequences,
        series: Vec::new(),
        skipped: Vec::new(),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acq(scan: &str, tr: f64, te: f64, ti: Option<f64>, flip: f64, desc: &str) -> MrAcquisition {
        MrAcquisition {
            scanning_sequence: scan.split('\\').map(str::to_string).collect(),
            repetition_time_ms: Some(tr),
            echo_time_ms: Some(te),
            inversion_time_ms: ti,
            flip_angle_deg: Some(flip),
            description: desc.into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_protocol_is_recovered_from_its_attributes_alone() {
        for q in MrSequence::ALL {
            let mut a = q.protocol().acquisition();
            // Not from the description: blank it (SWI keeps ImageType).
            a.description = "series 3".into();
            a.sequence_name.clear();
            let d = classify(&a);
            assert_eq!(d.sequence, Some(q), "{q}: {}", d.rule);
            assert!(!d.rule.contains("description"), "{q}: {}", d.rule);
        }
    }

    #[test]
    fn enhanced_mr_acquisition_contrast_decides() {
        let with = |c: &str, itype: &[&str]| MrAcquisition {
            acquisition_contrast: vec![c.into()],
            image_type: itype.iter().map(|s| s.to_string()).collect(),
            // Attributes that would say otherwise: the scanner's statement wins.
            scanning_sequence: vec!["SE".into()],
            repetition_time_ms: Some(500.0),
            echo_time_ms: Some(12.0),
            ..Default::default()
        };
        for (c, itype, q) in [
            ("FLUID_ATTENUATED", &[][..], Some(MrSequence::Flair)),
            ("T2", &[], Some(MrSequence::T2)),
            ("T2_STAR", &[], Some(MrSequence::T2StarGre)),
            (
                "T2_STAR",
                &["ORIGINAL", "PRIMARY", "SWI"],
                Some(MrSequence::Swi),
            ),
            ("PROTON_DENSITY", &[], None),
            ("DIFFUSION", &[], None),
        ] {
            let d = classify(&with(c, itype));
            assert_eq!(d.sequence, q, "{c}: {}", d.rule);
            assert!(d.rule.contains("AcquisitionContrast"), "{}", d.rule);
        }
        // UNKNOWN leaves it to the physics (short TR, short TE spin echo: T1); MIXED (frames
        // of several contrasts) is not read.
        let d = classify(&with("UNKNOWN", &[]));
        assert_eq!(d.sequence, Some(MrSequence::T1), "{}", d.rule);
        assert!(d.rule.contains("spin echo"), "{}", d.rule);
        let d = classify(&with("MIXED", &[]));
        assert_eq!(d.sequence, None, "{}", d.rule);
        assert!(d.rule.contains("MIXED"), "{}", d.rule);
        // An Enhanced minIP SWI (ImageType value 3 MIN_IP), and a BOLD series marked T2_STAR.
        let d = classify(&with("T2_STAR", &["ORIGINAL", "PRIMARY", "MIN_IP", "NONE"]));
        assert_eq!(d.sequence, Some(MrSequence::Swi), "{}", d.rule);
        let d = classify(&with("T2_STAR", &["ORIGINAL", "PRIMARY", "FMRI", "NONE"]));
        assert_eq!(d.sequence, None, "{}", d.rule);
        assert!(d.rule.contains("FMRI"), "{}", d.rule);
    }

    #[test]
    fn vendor_style_attributes_and_descriptions_that_lie() {
        // A FLAIR named "T2" by the site: the inversion time decides.
        let d = classify(&acq("SE\\IR", 9000.0, 120.0, Some(2500.0), 150.0, "T2 AX"));
        assert_eq!(d.sequence, Some(MrSequence::Flair), "{}", d.rule);
        // MPRAGE: gradient echo with an inversion near 900 ms is T1.
        let d = classify(&acq("GR\\IR", 2300.0, 2.9, Some(900.0), 9.0, "sag 3d"));
        assert_eq!(d.sequence, Some(MrSequence::T1), "{}", d.rule);
        // STIR and proton density are not read.
        let d = classify(&acq("SE\\IR", 5000.0, 60.0, Some(150.0), 150.0, ""));
        assert_eq!(d.sequence, None, "{}", d.rule);
        let d = classify(&acq("SE", 3000.0, 15.0, None, 90.0, ""));
        assert_eq!(d.sequence, None, "{}", d.rule);
        assert!(d.rule.contains("proton density"));
        // Diffusion is refused whatever its TR/TE say.
        let mut a = acq("EP\\SE", 5000.0, 90.0, None, 90.0, "ep2d_diff b1000");
        a.image_type = vec!["DERIVED".into(), "PRIMARY".into(), "DIFFUSION".into()];
        assert_eq!(classify(&a).sequence, None);
        // No attributes at all: the description, said so.
        let a = MrAcquisition {
            description: "AX FLAIR".into(),
            ..Default::default()
        };
        let d = classify(&a);
        assert_eq!(d.sequence, Some(MrSequence::Flair));
        assert!(d.rule.contains("description"), "{}", d.rule);
        let d = classify(&MrAcquisition::default());
        assert_eq!(d.sequence, None);
        assert!(d.rule.contains("not recognised"));
    }

    /// With bias-field correction asked for, a sequence too small to fit a field on is
    /// normalised uncorrected (its `bias_field` empty), while a head-sized one is corrected.
    #[test]
    fn a_sequence_too_small_for_a_field_is_kept_uncorrected() {
        let seq = |sequence, dims: [usize; 3], spacing: [f64; 3]| {
            let n = dims.iter().product();
            let data = (0..n).map(|i| 100.0 + (i % 7) as f32).collect();
            crate::dicom::MrSequenceRead {
                sequence,
                volume: crate::Volume::new(data, dims, spacing, crate::Modality::Mr).unwrap(),
                series_uid: String::new(),
                rule: String::new(),
            }
        };
        let study = crate::dicom::MrStudyRead {
            sequences: vec![
                seq(MrSequence::T2, [48, 48, 20], [4.0, 4.0, 5.0]),
                seq(MrSequence::Swi, [8, 8, 2], [4.0, 4.0, 4.0]),
            ],
            missing: vec![],
            series: vec![],
            skipped: vec![],
            source: None,
        };
        let cfg = crate::bias::BiasCorrectionConfig::default();
        let stack = study.on_one_grid(MrReduction::Mean, Some(&cfg)).unwrap();
        let field = |q| {
            stack
                .channels
                .iter()
                .find(|c| c.sequence == q)
                .unwrap()
                .bias_field
        };
        assert!(field(MrSequence::T2).is_some());
        assert_eq!(field(MrSequence::Swi), None);
        assert_eq!(stack.bias_correction, Some(cfg));
    }

    #[test]
    fn normalisation_removes_the_series_scale_and_ignores_extremes() {
        // Background 0 with noise, parenchyma ~ 1, a bright lesion and a void.
        let base: Vec<f32> = (0..4000)
            .map(|i| match i % 10 {
                0..=3 => (i % 7) as f32 * 0.5,
                4..=7 => 1.0 + 0.01 * (i % 5) as f32,
                8 => 3.0,
                _ => 0.3,
            })
            .collect();
        let (a, ma) = normalise_intensity(&base);
        let scaled: Vec<f32> = base.iter().map(|x| x * 737.0).collect();
        let (b, mb) = normalise_intensity(&scaled);
        assert!((mb / ma - 737.0).abs() < 1e-2, "{ma} {mb}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4);
        }
        // Parenchyma lands near 1.
        assert!((a[4] - 1.0).abs() < 0.05, "{}", a[4]);
    }

    #[test]
    fn names_round_trip() {
        for q in MrSequence::ALL {
            assert_eq!(MrSequence::from_name(q.name()), Some(q));
            // JSON says what file names and reports say.
            assert_eq!(
                serde_json::to_string(&q).unwrap(),
                format!("\"{}\"", q.name())
            );
            assert_eq!(MrSequence::ALL[q.index()], q);
        }
        assert_eq!(MrSequence::from_name("dwi"), None);
    }
}
