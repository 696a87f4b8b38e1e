//! The training envelope and the input gate: what the training inputs looked like (recorded
//! in the model card) and where a study about to be scored lies against it. A study clearly
//! outside is refused with the reason; one outside but near the edge is scored, with a review
//! flag whose reason says "outside the training envelope". Every property is measured on the
//! model input (after the card's preprocessing), so a training study and a served study are
//! measured the same way whatever path brought them to the grid.

use serde::{Deserialize, Serialize};

use crate::sample::StudySample;

/// Voxels of a windowed channel count as "inside the window" strictly between these (the
/// clamped ends are air/bone for the brain window, and f16 storage rounds near 0 and 1).
const INSIDE_WINDOW: (f32, f32) = (0.001, 0.999);

/// A property within `EDGE_MARGIN` × the training span (plus its absolute tolerance) of the
/// training range is inside; beyond that it is outside the envelope.
pub const EDGE_MARGIN: f64 = 0.1;

/// A geometric property below `lo / REFUSE_FACTOR` or above `hi × REFUSE_FACTOR` is clearly
/// not what the model was trained on (a 5 mm slab, a 16-pixel thumbnail, a whole-body field of
/// view): the study is refused.
pub const REFUSE_FACTOR: f64 = 2.0;

/// What the gate measures of one study on the model grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputProfile {
    /// Cranio-caudal extent: slices × slice spacing (mm).
    pub coverage_mm: f64,
    /// In-plane field of view: the larger of columns × x spacing and rows × y spacing (mm).
    pub fov_mm: f64,
    /// Per channel (HU window; MR sequence): mean of the channel (CT in [0, 1]; MR
    /// normalised to parenchyma ≈ 1, a missing sequence −1).
    pub window_mean: Vec<f64>,
    /// Per channel: fraction of voxels strictly between 0.001 and 0.999 (CT: inside the
    /// window, not clamped; MR: darker than parenchyma).
    pub window_inside: Vec<f64>,
}

impl InputProfile {
    /// The profile of a preprocessed study.
    pub fn of(sample: &StudySample) -> Self {
        let [s, c, h, w] = sample.shape;
        let [sx, sy, sz] = sample.spacing_mm;
        let plane = h * w;
        let n = (s * plane).max(1) as f64;
        let (mut sum, mut inside) = (vec![0f64; c], vec![0usize; c]);
        // `[S, C, H, W]`: channel `ch` of slice `si` is one contiguous plane.
        for (k, px) in sample.images.chunks_exact(plane.max(1)).enumerate() {
            let ch = k % c.max(1);
            sum[ch] += px.iter().map(|&x| f64::from(x)).sum::<f64>();
            inside[ch] += px
                .iter()
                .filter(|&&x| x > INSIDE_WINDOW.0 && x < INSIDE_WINDOW.1)
                .count();
        }
        let window_mean = sum.iter().map(|v| v / n).collect();
        let window_inside = inside.iter().map(|&v| v as f64 / n).collect();
        InputProfile {
            coverage_mm: s as f64 * sz,
            fov_mm: (w as f64 * sx).max(h as f64 * sy),
            window_mean,
            window_inside,
        }
    }
}

/// The range a property took over the training studies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
}

impl Range {
    fn of(values: impl Iterator<Item = f64>) -> Option<Range> {
        values.filter(|v| v.is_finite()).fold(None, |r, v| {
            Some(match r {
                None => Range { lo: v, hi: v },
                Some(Range { lo, hi }) => Range {
                    lo: lo.min(v),
                    hi: hi.max(v),
                },
            })
        })
    }
}

/// `card.json`'s `envelope`: the modality and the range of every [`InputProfile`] property
/// over the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingEnvelope {
    /// `"CT"` or `"MR"`.
    pub modality: String,
    /// Training studies the ranges are taken over.
    pub n_studies: usize,
    pub coverage_mm: Range,
    pub fov_mm: Range,
    /// One range per HU window of the card's preprocessing.
    pub window_mean: Vec<Range>,
    pub window_inside: Vec<Range>,
}

/// One property of a study against its training range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputCheck {
    /// `coverage_mm`, `fov_mm`, `window_mean[k]`, `window_inside[k]`.
    pub property: String,
    pub value: f64,
    pub training_range: [f64; 2],
    pub verdict: Verdict,
}

/// Where a property (or a whole study) lies against the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Inside,
    /// Outside the training range: scored, flagged for review.
    Outside,
    /// Clearly not what the model was trained on: refused.
    Refused,
}

/// `prediction.json`'s `input_gate`: every check, and the study's verdict (the worst of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputGate {
    pub verdict: Verdict,
    pub checks: Vec<InputCheck>,
}

impl InputGate {
    /// The checks that are not inside, in words (for review reasons and refusals).
    pub fn describe(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.verdict != Verdict::Inside)
            .map(|c| {
                format!(
                    "{} {:.3} vs {:.3}–{:.3} in training",
                    c.property, c.value, c.training_range[0], c.training_range[1]
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl TrainingEnvelope {
    /// The envelope of the CT studies among `training` (`None` when there are none).
    pub fn of<'a>(training: impl IntoIterator<Item = &'a StudySample>) -> Option<Self> {
        Self::of_modality(training, hn_model::MODALITY_CT)
    }

    /// The envelope of `training` studies of one modality (`None` when there are none): a
    /// CT study is checked against the CT studies' envelope, an MR study against the MR ones'.
    pub fn of_modality<'a>(
        training: impl IntoIterator<Item = &'a StudySample>,
        modality: i64,
    ) -> Option<Self> {
        let profiles: Vec<InputProfile> = training
            .into_iter()
            .filter(|s| s.modality == modality)
            .map(InputProfile::of)
            .collect();
        let first = profiles.first()?;
        let per_window = |get: fn(&InputProfile) -> &Vec<f64>| -> Option<Vec<Range>> {
            (0..get(first).len())
                .map(|k| Range::of(profiles.iter().map(|p| get(p)[k])))
                .collect()
        };
        Some(TrainingEnvelope {
            modality: if modality == hn_model::MODALITY_MR {
                "MR"
            } else {
                "CT"
            }
            .into(),
            n_studies: profiles.len(),
            coverage_mm: Range::of(profiles.iter().map(|p| p.coverage_mm))?,
            fov_mm: Range::of(profiles.iter().map(|p| p.fov_mm))?,
            window_mean: per_window(|p| &p.window_mean)?,
            window_inside: per_window(|p| &p.window_inside)?,
        })
    }

    /// Check `profile` against the envelope. Geometry (coverage, field of view) can refuse a
    /// study; the intensity summaries only flag one, since a real bleed or a different scanner
    /// shifts them without making the study unreadable.
    pub fn check(&self, profile: &InputProfile) -> InputGate {
        let mut checks = vec![
            check(
                "coverage_mm",
                profile.coverage_mm,
                self.coverage_mm,
                5.0,
                true,
            ),
            check("fov_mm", profile.fov_mm, self.fov_mm, 5.0, true),
        ];
        let summaries = [
            ("window_mean", &self.window_mean, &profile.window_mean),
            ("window_inside", &self.window_inside, &profile.window_inside),
        ];
        for (name, ranges, values) in summaries {
            for (k, (range, value)) in ranges.iter().zip(values).enumerate() {
                checks.push(check(&format!("{name}[{k}]"), *value, *range, 0.01, false));
            }
        }
        InputGate {
            verdict: checks
                .iter()
                .map(|c| c.verdict)
                .max()
                .unwrap_or(Verdict::Inside),
            checks,
        }
    }
}

/// `value` against `range`: inside within [`EDGE_MARGIN`] of the span plus `abs_tol`; refused
/// (when `can_refuse`) beyond [`REFUSE_FACTOR`]; else outside.
fn check(property: &str, value: f64, range: Range, abs_tol: f64, can_refuse: bool) -> InputCheck {
    let margin = EDGE_MARGIN * (range.hi - range.lo) + abs_tol;
    let verdict = if !value.is_finite() {
        Verdict::Refused
    } else if value >= range.lo - margin && value <= range.hi + margin {
        Verdict::Inside
    } else if can_refuse && (value < range.lo / REFUSE_FACTOR || value > range.hi * REFUSE_FACTOR) {
        Verdict::Refused
    } else {
        Verdict::Outside
    };
    InputCheck {
        property: property.into(),
        value,
        training_range: [range.lo, range.hi],
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(coverage_mm: f64, fov_mm: f64, mean: f64) -> InputProfile {
        InputProfile {
            coverage_mm,
            fov_mm,
            window_mean: vec![mean],
            window_inside: vec![0.4],
        }
    }

    fn envelope() -> TrainingEnvelope {
        TrainingEnvelope {
            modality: "CT".into(),
            n_studies: 3,
            coverage_mm: Range {
                lo: 120.0,
                hi: 160.0,
            },
            fov_mm: Range {
                lo: 220.0,
                hi: 250.0,
            },
            window_mean: vec![Range { lo: 0.2, hi: 0.3 }],
            window_inside: vec![Range { lo: 0.3, hi: 0.5 }],
        }
    }

    #[test]
    fn inside_edge_and_refused_follow_the_margins() {
        let e = envelope();
        let verdict =
            |coverage: f64, fov: f64, mean: f64| e.check(&profile(coverage, fov, mean)).verdict;
        // Inside, and inside the margin (160 + 0.1·40 + 5 = 169).
        assert_eq!(verdict(140.0, 230.0, 0.25), Verdict::Inside);
        assert_eq!(verdict(168.0, 230.0, 0.25), Verdict::Inside);
        // Beyond the margin but under 2×: outside, named in the description.
        let g = e.check(&profile(200.0, 230.0, 0.25));
        assert_eq!(g.verdict, Verdict::Outside);
        assert!(
            g.describe().starts_with("coverage_mm 200.000"),
            "{}",
            g.describe()
        );
        // An intensity summary far off only flags.
        assert_eq!(verdict(140.0, 230.0, 0.9), Verdict::Outside);
        // A 5 mm slab or a 8 mm field of view is refused; so is a non-finite value.
        assert_eq!(verdict(5.0, 230.0, 0.25), Verdict::Refused);
        assert_eq!(verdict(140.0, 7.8, 0.25), Verdict::Refused);
        assert_eq!(verdict(f64::NAN, 230.0, 0.25), Verdict::Refused);
    }

    #[test]
    fn envelope_spans_the_training_profiles() {
        // Two windows, 4 slices of 2 × 2 at 30 mm: 120 mm coverage; window 0 holds `v`,
        // window 1 holds 0.
        let s = |fov: f64, v: f32| {
            let mut data = vec![v; 4 * 4];
            data.extend(vec![0.0f32; 4 * 4]);
            let cached = hn_data::preprocess::CachedStudy {
                shape: [2, 4, 2, 2],
                data,
                labels: None,
                slice_labels: None,
                spacing_mm: [fov / 2.0, fov / 2.0, 30.0],
            };
            StudySample::from_cached("k", "p", cached, Default::default(), Default::default())
        };
        let a = s(220.0, 0.5);
        let b = s(240.0, 0.0);
        let e = TrainingEnvelope::of([&a, &b]).unwrap();
        assert_eq!(e.n_studies, 2);
        assert_eq!(
            e.fov_mm,
            Range {
                lo: 220.0,
                hi: 240.0
            }
        );
        assert_eq!(
            e.coverage_mm,
            Range {
                lo: 120.0,
                hi: 120.0
            }
        );
        assert_eq!(e.window_mean[0], Range { lo: 0.0, hi: 0.5 });
        assert_eq!(e.window_mean[1], Range { lo: 0.0, hi: 0.0 });
        // 0.5 is inside the window, 0 is clamped.
        assert_eq!(e.window_inside[0], Range { lo: 0.0, hi: 1.0 });
        assert!(TrainingEnvelope::of(std::iter::empty()).is_none());
    }
}
