//! DICOM study → one oriented [`Volume`] of Hounsfield units (CT) or stored intensities (MR).
//!
//! Why it is built this way:
//! * **Parsing** is dicom-rs (`dicom-object`), which handles every transfer syntax's data-set
//!   encoding (implicit/explicit VR, big endian, deflate). Files without preamble or file meta
//!   are retried as bare data sets, because such files still turn up in old archives.
//! * **Decompression** goes through dicom-rs's transfer-syntax registry (RLE, JPEG via
//!   `jpeg-decoder`, JPEG 2000 via the C OpenJPEG library, which `openjpeg-sys` compiles from
//!   its vendored sources with `cc`: no cmake, no system library, and the same decoder pydicom
//!   uses, so it is as fast; the pure-Rust `openjp2` port was 1.2–2.2× slower). dicom-rs's JPEG-LS adapter
//!   needs CharLS and cmake, so JPEG-LS is decoded here with the pure-Rust `jpegls` crate.
//!   Decoders run under `catch_unwind`: a corrupt stream must give an error, never a panic.
//! * **Values** (stored → HU) are computed here, not by dicom-pixeldata, because HU need rules
//!   its generic path does not apply: per-frame functional-group rescale (enhanced CT), Bits
//!   Stored masking and sign extension, pixel padding, attributes stored with VR UN, the RSNA
//!   header fix, and refusing non-quantitative images instead of guessing.
//! * **Geometry** comes from ImagePositionPatient projected on the slice normal, never from
//!   InstanceNumber or file names, which are unreliable in real exports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_object::file::ReadPreamble;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use crate::{ImagingError, Modality, Provenance, Volume};

type Obj = FileDicomObject<InMemDicomObject>;

/// Options for [`read_series`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Use this SeriesInstanceUID instead of the automatic choice.
    pub series_uid: Option<String>,
    /// RSNA-2019 header fix. Some scans of the RSNA Intracranial Hemorrhage Detection data
    /// (Kaggle 2019) carry `BitsStored 12, PixelRepresentation 0` with a RescaleIntercept above
    /// -100 although their pixels were written shifted by -1000 and wrapped at 4096. With this
    /// switch on, such slices get `stored + 1000` (wrapped at 4096) and intercept -1000, the
    /// correction widely used on that data set. Off by default: on any other data it would
    /// corrupt correct values.
    pub rsna_fix: bool,
    /// Replace voxels equal to PixelPaddingValue (outside the scan field) by the lowest value
    /// of the volume (for CT at most -1024 HU, air). On by default; off gives the stored values
    /// rescaled like any other voxel (what pydicom's `apply_modality_lut` returns).
    pub apply_padding: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            series_uid: None,
            rsna_fix: false,
            apply_padding: true,
        }
    }
}

/// One series found in the input, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSummary {
    pub uid: String,
    pub modality: String,
    pub description: String,
    pub files: usize,
    /// Frames (slices) over all files of the series.
    pub frames: usize,
    pub rows: usize,
    pub cols: usize,
    /// `axial`, `coronal`, `sagittal`, `oblique` or `unknown` (no orientation).
    pub orientation: String,
    pub slice_thickness: Option<f64>,
    pub kernel: Option<String>,
    /// Why this series cannot be read as a volume, if it cannot.
    pub unusable: Option<String>,
    pub chosen: bool,
    /// MR series: the contrast [`crate::mr::classify`] tells from the acquisition attributes
    /// (`None` inside: a contrast the model does not read), and the rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr: Option<crate::mr::SequenceDecision>,
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// The result of reading a study: the chosen series as a volume, and what else was there.
#[derive(Debug, Clone)]
pub struct StudyRead {
    pub volume: Volume,
    /// Which rule picked the series (also in `volume.provenance.notes`).
    pub chosen_rule: String,
    /// Every series found, the chosen one marked.
    pub series: Vec<SeriesSummary>,
    pub skipped: Vec<SkippedFile>,
    /// The source study's identity and the chosen series' instances (DICOM input only), for
    /// results filed back into the same study ([`crate::dicom_write`]).
    pub source: Option<SourceStudy>,
}

mod attributes;
mod header;
pub mod identity;
mod open;
mod pixels;
mod series;
mod volume;

#[allow(unused_imports)]
use attributes::*;
#[allow(unused_imports)]
use header::*;
pub use identity::{IdentityError, SourceInstance, SourceStudy};
pub use open::check_dataset_lengths;
pub(crate) use open::open_dicom;

/// Parse one instance held in memory (Part-10 with or without preamble, or a bare data set),
/// with the reader's truncation checks; `name` names it in errors.
pub fn open_bytes(
    name: &Path,
    bytes: &[u8],
) -> Result<FileDicomObject<InMemDicomObject>, ImagingError> {
    open::open_dicom_bytes(name, bytes)
}
#[allow(unused_imports)]
use open::*;
#[allow(unused_imports)]
use pixels::*;
#[allow(unused_imports)]
use series::*;
pub use series::{
    MemoryData, MemoryInstance, MrSequenceRead, MrStudyRead, peek_modality, read_mr_study,
    read_mr_study_from_memory, read_series, read_series_from_memory,
};
#[allow(unused_imports)]
use volume::*;
pub use volume::{read_file, read_object};
