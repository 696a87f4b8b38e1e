//! Serde of undefined and infinite values.

#[allow(unused_imports)]
use super::*;

#[test]
fn refer_everything_policy_survives_json() {
    let p = ReferralPolicy::fit(&[0.1, 0.2, 0.3], 1.0).unwrap();
    assert_eq!(p.threshold, f64::NEG_INFINITY);
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains("\"-inf\""), "{text}");
    let back: ReferralPolicy = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
    let q = ReferralPolicy::fit(&[0.1, 0.2, 0.3], 0.0).unwrap();
    let back: ReferralPolicy = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
    assert_eq!(back, q);
    assert!(
        serde_json::from_str::<ReferralPolicy>(
            r#"{"threshold":"lots","target_rate":0.1,"validation_rate":0.1}"#
        )
        .is_err()
    );
}
