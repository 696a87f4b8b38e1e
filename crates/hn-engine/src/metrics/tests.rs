//! Tests against scikit-learn reference values.

#[allow(unused_imports)]
use super::*;

// Reference values from scikit-learn 1.9.1 / scipy:
// s = np.array([0.1,0.4,0.35,0.8,0.65,0.4,0.2,0.9,0.55,0.4])
// y = np.array([0,0,1,1,0,1,0,1,1,0])
// roc_auc_score(y,s) -> 0.76; average_precision_score(y,s) -> 0.7892857142857144
// brier_score_loss(y,s) -> 0.18275; log_loss(y,s) -> 0.5292431363103185
// roc_curve(y,s,drop_intermediate=False) -> see ROC below; f1_score(y, s>=0.4) -> 2/3
// z = 3*logit(s); minimize_scalar(mean NLL of sigmoid(z/t), bounds=(0.01,100)) -> 2.43803801
// ECE, 15 equal-width bins: 0.255
const S: [f64; 10] = [0.1, 0.4, 0.35, 0.8, 0.65, 0.4, 0.2, 0.9, 0.55, 0.4];
const Y: [bool; 10] = [
    false, false, true, true, false, true, false, true, true, false,
];

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn auc_matches_sklearn_with_ties() {
    close(roc_auc(&S, &Y).unwrap(), 0.76, 1e-12);
    // perfect and inverted
    close(roc_auc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0, 0.0);
    close(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0, 0.0);
    // all tied -> 0.5
    close(
        roc_auc(&[0.3; 4], &[true, false, true, false]).unwrap(),
        0.5,
        0.0,
    );
}

#[test]
fn auc_rejects_bad_input() {
    assert_eq!(
        roc_auc(&[0.1, 0.2], &[true, true]),
        Err(MetricsError::SingleClass("roc_auc"))
    );
    assert!(matches!(
        roc_auc(&[0.1], &[true, false]),
        Err(MetricsError::LengthMismatch { .. })
    ));
    assert!(matches!(
        roc_auc(&[0.1, f64::NAN], &[true, false]),
        Err(MetricsError::NonFinite { index: 1, .. })
    ));
}

#[test]
fn bootstrap_ci_is_seeded_and_brackets_estimate() {
    let a = roc_auc_ci(&S, &Y, 500, 7).unwrap();
    let b = roc_auc_ci(&S, &Y, 500, 7).unwrap();
    let c = roc_auc_ci(&S, &Y, 500, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!((a.lo, a.hi), (c.lo, c.hi)); // the seed matters
    assert!(a.lo <= a.estimate && a.estimate <= a.hi, "{a:?}");
    assert!(a.lo > 0.2 && a.hi <= 1.0 && a.hi - a.lo > 0.1, "{a:?}");
    assert_eq!(a.n_boot, 500);
}

#[test]
fn paired_auc_difference_is_exact_and_narrower_than_the_two_intervals() {
    // 400 cases: a score that separates the classes, and a second one with extra noise.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let y: Vec<bool> = (0..400).map(|i| i % 3 == 0).collect();
    let a: Vec<f64> = y
        .iter()
        .map(|&l| f64::from(u8::from(l)) + rng.random_range(-1.0..1.0))
        .collect();
    let b: Vec<f64> = a.iter().map(|v| v + rng.random_range(-0.8..0.8)).collect();
    let d = roc_auc_difference_ci(&a, &b, &y, 500, 7).unwrap();
    let (ia, ib) = (
        roc_auc_ci(&a, &y, 500, 7).unwrap(),
        roc_auc_ci(&b, &y, 500, 7).unwrap(),
    );
    assert!(
        (d.estimate - (ia.estimate - ib.estimate)).abs() < 1e-12,
        "{d:?}"
    );
    assert!(
        d.estimate > 0.0 && d.lo <= d.estimate && d.estimate <= d.hi,
        "{d:?}"
    );
    // Paired: the cases drawn cancel, so the difference is known better than either AUC.
    assert!(
        d.hi - d.lo < (ia.hi - ia.lo).min(ib.hi - ib.lo),
        "{d:?} {ia:?} {ib:?}"
    );
    assert!(d.lo > 0.0, "the noisier score is worse beyond doubt: {d:?}");
    // A score against itself differs by exactly nothing on every resample.
    let same = roc_auc_difference_ci(&a, &a, &y, 200, 1).unwrap();
    assert_eq!(
        (same.estimate, same.lo, same.hi, same.n_boot),
        (0.0, 0.0, 0.0, 200)
    );
    assert!(matches!(
        roc_auc_difference_ci(&a, &b[..10], &y, 10, 1),
        Err(MetricsError::LengthMismatch { .. })
    ));
}

#[test]
fn roc_curve_matches_sklearn() {
    const ROC: [(f64, f64, f64); 9] = [
        (f64::INFINITY, 0.0, 0.0),
        (0.9, 0.0, 0.2),
        (0.8, 0.0, 0.4),
        (0.65, 0.2, 0.4),
        (0.55, 0.2, 0.6),
        (0.4, 0.6, 0.8),
        (0.35, 0.6, 1.0),
        (0.2, 0.8, 1.0),
        (0.1, 1.0, 1.0),
    ];
    let c = roc_curve(&S, &Y).unwrap();
    assert_eq!(c.len(), ROC.len());
    for (p, (t, f, r)) in c.iter().zip(ROC) {
        assert_eq!(p.threshold, t);
        close(p.fpr, f, 1e-12);
        close(p.tpr, r, 1e-12);
    }
}

#[test]
fn operating_points() {
    let op = at_threshold(&S, &Y, 0.4).unwrap();
    assert_eq!((op.tp, op.fp, op.tn, op.fn_), (4, 3, 2, 1));
    close(op.sensitivity, 0.8, 1e-12);
    close(op.specificity, 0.4, 1e-12);
    close(op.f1, 2.0 / 3.0, 1e-12);
    close(f1_score(&S, &Y, 0.4).unwrap(), 2.0 / 3.0, 1e-12);
    // Youden: J = tpr - fpr is max 0.4 at 0.8 (0.4-0), 0.55 (0.6-0.2) and 0.35 (1-0.6);
    // the highest threshold wins ties.
    let y = youden(&S, &Y).unwrap();
    assert_eq!(y.threshold, 0.8);
    close(y.sensitivity - (1.0 - y.specificity), 0.4, 1e-12);
}

#[test]
fn pr_auc_brier_logloss_match_sklearn() {
    close(
        average_precision(&S, &Y).unwrap(),
        0.7892857142857144,
        1e-12,
    );
    close(brier(&S, &Y).unwrap(), 0.18275, 1e-12);
    close(log_loss(&S, &Y).unwrap(), 0.5292431363103185, 1e-12);
    assert!(matches!(
        brier(&[1.5], &[true]),
        Err(MetricsError::NotProbability { .. })
    ));
}

#[test]
fn rsna_log_loss_weights_any_twice() {
    // One row: any p=0.5 (y=1), subtypes p=0.5 (y=0) -> every term ln 2 -> loss ln 2.
    let l =
        rsna_weighted_log_loss(&[[0.5; 6]], &[[true, false, false, false, false, false]]).unwrap();
    close(l, 2f64.ln(), 1e-12);
    // any perfectly right, subtypes p=0.5: (2*~0 + 5*ln2)/7
    let mut p = [0.5; 6];
    p[0] = 1.0;
    let l = rsna_weighted_log_loss(&[p], &[[true; 6]]).unwrap();
    close(l, 5.0 * 2f64.ln() / 7.0, 1e-12);
    // any wrong (p=0.25 for y=1) weighs 2: (2*ln4 + 5*ln2)/7
    p[0] = 0.25;
    let l = rsna_weighted_log_loss(&[p], &[[true; 6]]).unwrap();
    close(l, (2.0 * 4f64.ln() + 5.0 * 2f64.ln()) / 7.0, 1e-12);
}

#[test]
fn ece_and_reliability() {
    close(ece(&S, &Y, ECE_BINS).unwrap(), 0.255, 1e-12);
    let bins = reliability(&S, &Y, 15).unwrap();
    assert_eq!(bins.len(), 15);
    assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 10);
    // p = 1.0 goes to the last bin, p = 0 to the first
    let b = reliability(&[0.0, 1.0], &[false, true], 15).unwrap();
    assert_eq!((b[0].count, b[14].count), (1, 1));
    close(ece(&[0.0, 1.0], &[false, true], 15).unwrap(), 0.0, 0.0);
}

#[test]
fn temperature_scaling_matches_scipy_and_helps() {
    let z: Vec<f64> = S.iter().map(|p| 3.0 * (p / (1.0 - p)).ln()).collect();
    let t = fit_temperature(&z, &Y).unwrap();
    close(t, 2.4380380100172983, 1e-6);
    let before = nll_at_temperature(&z, &Y, 1.0);
    let after = nll_at_temperature(&z, &Y, t);
    assert!(after < before);
    close(after, 0.5252760781590476, 1e-9);
    let p = apply_temperature(&z, t);
    assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn platt_scaling_recovers_a_shift_that_temperature_cannot() {
    // Labels drawn from sigmoid(0.5·z − 1): the model is over-confident and shifted.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let z: Vec<f64> = (0..4000).map(|_| rng.random_range(-6.0..6.0)).collect();
    let y: Vec<bool> = z
        .iter()
        .map(|z| rng.random::<f64>() < sigmoid(0.5 * z - 1.0))
        .collect();
    let c = fit_platt(&z, &y).unwrap();
    assert_eq!(c.method, CalibrationMethod::Platt);
    close(c.temperature, 2.0, 0.25);
    close(c.bias, -1.0, 0.2);
    let t = fit_temperature(&z, &y).unwrap();
    let platt_nll = {
        let p = c.probabilities(&z);
        log_loss_mean(&p, &y)
    };
    let temp_nll = nll_at_temperature(&z, &y, t);
    assert!(platt_nll < temp_nll - 0.01, "{platt_nll} vs {temp_nll}");
    let ece_p = ece(&c.probabilities(&z), &y, 15).unwrap();
    let ece_t = ece(&apply_temperature(&z, t), &y, 15).unwrap();
    assert!(ece_p < ece_t, "{ece_p} vs {ece_t}");
    // The chooser picks Platt with enough of each class, temperature without.
    assert_eq!(
        fit_logit_calibration(&z, &y).unwrap().method,
        CalibrationMethod::Platt
    );
    let few = fit_logit_calibration(&z[..30], &y[..30]).unwrap();
    assert_eq!(few.method, CalibrationMethod::Temperature);
    assert_eq!(few.bias, 0.0);
    // Logits that rank backwards: no Platt fit, the chooser still answers.
    let flipped: Vec<f64> = z.iter().map(|v| -v).collect();
    assert!(fit_platt(&flipped, &y).is_err());
    assert_eq!(
        fit_logit_calibration(&flipped, &y).unwrap().method,
        CalibrationMethod::Temperature
    );
}

#[test]
fn a_site_refit_is_kept_only_when_it_predicts_held_out_studies_better() {
    // Site data drawn from sigmoid(a·z + b) for a card that is already right (a = 1, b = 0),
    // and for one that is off (a = 0.5, b = −1).
    let site = |a: f64, b: f64, n: usize, seed: u64| -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z: Vec<f64> = (0..n).map(|_| rng.random_range(-4.0..4.0)).collect();
        let y = z
            .iter()
            .map(|z| rng.random::<f64>() < sigmoid(a * z + b))
            .collect();
        (z, y)
    };
    let card = LogitCalibration::IDENTITY;
    // Wrong card, plenty of data: refitted, and the refit is the fit on all of it.
    let (z, y) = site(0.5, -1.0, 2000, 5);
    let (c, refitted) = keep_or_refit(&z, &y, card, fit_logit_calibration);
    assert!(refitted);
    assert_eq!(c, fit_logit_calibration(&z, &y).unwrap());
    // Right card, a small site: the card stays on (nearly) every draw.
    let kept = (0..40)
        .filter(|seed| {
            let (z, y) = site(1.0, 0.0, 200, 100 + seed);
            !keep_or_refit(&z, &y, card, fit_logit_calibration).1
        })
        .count();
    assert!(kept >= 28, "card kept on {kept} of 40 small right sites");
    // Too few studies to cross-validate, or a fit that always fails: the card.
    let (z, y) = site(0.5, -1.0, 9, 6);
    assert_eq!(
        keep_or_refit(&z, &y, card, fit_logit_calibration),
        (card, false)
    );
    let (z, y) = site(0.5, -1.0, 500, 7);
    let fails = |_: &[f64], _: &[bool]| -> Result<LogitCalibration> {
        Err(MetricsError::Invalid("no".into()))
    };
    assert_eq!(keep_or_refit(&z, &y, card, fails), (card, false));
}

fn log_loss_mean(p: &[f64], y: &[bool]) -> f64 {
    p.iter()
        .zip(y)
        .map(|(p, y)| if *y { -p.ln() } else { -(1.0 - p).ln() })
        .sum::<f64>()
        / p.len() as f64
}

#[test]
fn referral_curve_drops_uncertain_errors() {
    // Wrong cases are the uncertain ones: referring them raises accuracy to 1.
    let probs = [0.9, 0.1, 0.6, 0.4, 0.8, 0.2];
    let labels = [true, false, false, true, true, false];
    let unc: Vec<f64> = probs.iter().map(|p| binary_entropy(*p)).collect();
    let c = referral_curve(&probs, &labels, &unc, &[0.0, 1.0 / 3.0, 1.0]).unwrap();
    close(c[0].accuracy, 4.0 / 6.0, 1e-12);
    assert_eq!(c[1].n_retained, 4);
    close(c[1].accuracy, 1.0, 0.0);
    assert_eq!(c[1].auc, Some(1.0));
    assert_eq!(c[2].n_retained, 0);
    assert!(c[2].auc.is_none());
}

#[test]
fn referral_policy_hits_target_rate() {
    let u: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
    let p = ReferralPolicy::fit(&u, 0.2).unwrap();
    close(p.validation_rate, 0.2, 1e-12);
    assert_eq!(u.iter().filter(|x| p.refer(**x)).count(), 20);
    assert!(p.refer(0.99) && !p.refer(0.5));
    assert!(p.refer(f64::NAN));
    let none = ReferralPolicy::fit(&u, 0.0).unwrap();
    assert_eq!(u.iter().filter(|x| none.refer(**x)).count(), 0);
    let all = ReferralPolicy::fit(&u, 1.0).unwrap();
    assert_eq!(u.iter().filter(|x| all.refer(**x)).count(), 100);
    assert!(ReferralPolicy::fit(&u, 1.5).is_err());
}

#[test]
fn each_case_at_its_own_threshold() {
    // Equal thresholds: the same point as `at_threshold`, threshold reported.
    let same = at_thresholds(&S, &Y, &[0.4; 10]).unwrap();
    assert_eq!(same, at_threshold(&S, &Y, 0.4).unwrap());
    // The first five judged at 0.9 (all negative), the rest at 0.1 (all positive).
    let thr: Vec<f64> = (0..10).map(|i| if i < 5 { 0.9 } else { 0.1 }).collect();
    let p = at_thresholds(&S, &Y, &thr).unwrap();
    // Cases 5..10: labels 1,0,1,1,0 → tp 3, fp 2; cases 0..5: labels 0,0,1,1,0 → fn 2, tn 3.
    assert_eq!((p.tp, p.fp, p.tn, p.fn_), (3, 2, 3, 2));
    assert!(p.threshold.is_nan());
    let json = serde_json::to_value(p).unwrap();
    assert!(json["threshold"].is_null());
    assert!(at_thresholds(&S, &Y, &[0.5; 3]).is_err());
}

#[test]
fn a_logit_re_expressed_on_another_calibration_keeps_its_probability() {
    let mr = LogitCalibration {
        method: CalibrationMethod::Platt,
        temperature: 1.7,
        bias: -0.4,
    };
    let ct = LogitCalibration {
        method: CalibrationMethod::Platt,
        temperature: 0.8,
        bias: 0.3,
    };
    for z in [-5.0, -0.3, 0.0, 2.2, 9.0] {
        close(ct.logit(ct.equivalent_logit(z, &mr)), mr.logit(z), 1e-12);
        close(ct.equivalent_logit(z, &ct), z, 1e-12);
    }
}

#[test]
fn an_uncertainty_re_expressed_on_another_policy_keeps_its_referral() {
    let policy = |threshold| ReferralPolicy {
        threshold,
        target_rate: 0.1,
        validation_rate: 0.1,
    };
    let policies = [
        policy(0.3),
        policy(0.05),
        policy(f64::NEG_INFINITY),
        policy(0.3_f64.next_up()),
    ];
    let us = [0.0, 0.05, 0.1, 0.3, 0.31, 0.69, f64::NAN, f64::INFINITY];
    for own in &policies {
        for onto in &policies {
            for &u in &us {
                let v = onto.equivalent_uncertainty(u, own);
                assert_eq!(
                    onto.refer(v),
                    own.refer(u),
                    "{u} from {own:?} onto {onto:?}"
                );
            }
            // Order is kept among the cases on the same side.
            let a = onto.equivalent_uncertainty(0.31, own);
            let b = onto.equivalent_uncertainty(0.69, own);
            assert!(a <= b, "{a} {b}");
        }
    }
}
