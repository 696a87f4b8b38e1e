//! # hn-model — layer 3: the network
//!
//! Takes tensors (windowed slices, clinical values + missing masks) and returns every output a
//! report needs. Knows nothing of files, datasets or the CLI.
