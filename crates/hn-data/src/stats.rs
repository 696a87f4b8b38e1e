//! Rank statistics shared by the synthetic generator's self-checks and the engine's metrics.

/// Area under the ROC curve by the Mann–Whitney U statistic with average ranks for ties (a
/// tied positive/negative pair counts one half), equal to scikit-learn's `roc_auc_score`.
/// NaN when a class is missing; the caller checks lengths and finiteness
/// (`hn_engine::metrics::roc_auc` is the checked form).
pub fn roc_auc_unchecked(scores: &[f64], labels: &[bool]) -> f64 {
    let n1 = labels.iter().filter(|l| **l).count();
    let n0 = labels.len() - n1;
    if n1 == 0 || n0 == 0 {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average 1-based ranks over tie groups; sum ranks of positives.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let (n1f, n0f) = (n1 as f64, n0 as f64);
    (rank_sum_pos - n1f * (n1f + 1.0) / 2.0) / (n1f * n0f)
}
