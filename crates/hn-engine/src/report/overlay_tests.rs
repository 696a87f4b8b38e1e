//! Tests of the overlay helpers.

#[allow(unused_imports)]
use super::*;

#[test]
fn nearest_upscale_repeats_pixels() {
    let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 wide, 2 high
    let up = upscale_nearest(&img, 3, 2, 2);
    assert_eq!(up.len(), 24);
    assert_eq!(&up[0..6], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    assert_eq!(&up[6..12], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    assert_eq!(&up[12..18], &[4.0, 4.0, 5.0, 5.0, 6.0, 6.0]);
    assert_eq!(display_factor(64, 64, 256), 4);
    assert_eq!(display_factor(300, 10, 256), 1);
}
