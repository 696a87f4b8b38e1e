//! NIfTI-1/NIfTI-2 read and write, with NIfTI's RAS+ world converted to our LPS.
//!
//! Why this module exists: a DICOM series and its NIfTI conversion must give the *same* array
//! and the *same* affine, so masks drawn on either line up. NIfTI stores voxel→world in RAS+
//! (x to the patient's Right→Left is *negative*), DICOM and [`Volume`] in LPS, so rows 0 and 1 of
//! the affine are negated on the way in and out. The voxel order is the same on both sides
//! (i fastest, "Fortran order"), so no data reordering is needed.
//!
//! Reading NIfTI-1 uses the `nifti` crate (header parsing, byte order, datatype conversion).
//! Two things are hand-written, on purpose:
//! * **NIfTI-2 headers**: `nifti` 0.18 only parses the 348-byte NIfTI-1 header; the 540-byte
//!   NIfTI-2 header is a fixed layout of little/big-endian fields, parsed here, after which the
//!   crate's datatype conversion is reused.
//! * **Writing**: the crate's writer needs `ndarray` and `nalgebra` to set an affine and cannot
//!   set sform and qform independently; the NIfTI-1 header we write is 348 fixed bytes.

use std::io::{Read, Write};
use std::path::Path;

use nifti::{DataElement, Endianness, NiftiHeader, NiftiType};

use crate::{ImagingError, Modality, Provenance, Volume};

/// Options for [`read_volume`].
#[derive(Debug, Clone, Default)]
pub struct NiftiReadOptions {
    /// Which volume of a 4-D file to take (0-based along the 4th dimension).
    pub volume_index: usize,
    /// What the values are; NIfTI carries no modality, so the default is `Other("NIfTI")`.
    pub modality: Option<Modality>,
}

/// The header fields we use, widened to NIfTI-2 precision.
#[derive(Debug, Clone)]
struct Header {
    version: u8,
    dim: [i64; 8],
    datatype: i16,
    pixdim: [f64; 8],
    vox_offset: u64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    endianness: Endianness,
}

fn nerr(path: &Path, reason: impl Into<String>) -> ImagingError {
    ImagingError::Nifti {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".gz")
}

/// All bytes of the file, gunzipped when the name ends in `.gz`.
fn read_bytes(path: &Path) -> Result<Vec<u8>, ImagingError> {
    let raw = std::fs::read(path).map_err(|source| ImagingError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    gunzip_if_needed(path, raw)
}

/// The bytes themselves, or their gzip stream decompressed (by magic, or `.gz` in `name`).
fn gunzip_if_needed(name: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ImagingError> {
    if is_gz(name) || raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| nerr(name, format!("gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header, ImagingError> {
    if bytes.len() < 348 {
        return Err(nerr(
            path,
            format!("{} bytes, shorter than a NIfTI header", bytes.len()),
        ));
    }
    let le = i32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let be = i32::from_be_bytes(bytes[0..4].try_into().unwrap());
    match (le, be) {
        (348, _) | (_, 348) => parse_nifti1(path, bytes),
        (540, _) => parse_nifti2(path, bytes, Endianness::Little),
        (_, 540) => parse_nifti2(path, bytes, Endianness::Big),
        _ => Err(nerr(
            path,
            format!("sizeof_hdr is {le}, neither 348 (NIfTI-1) nor 540 (NIfTI-2)"),
        )),
    }
}

fn parse_nifti1(path: &Path, bytes: &[u8]) -> Result<Header, ImagingError> {
    let h = NiftiHeader::from_reader(&bytes[..348]).map_err(|e| nerr(path, e.to_string()))?;
    if &h.magic != b"n+1\0" {
        return Err(nerr(
            path,
            "header magic is not n+1 (separate .hdr/.img pairs are not supported)",
        ));
    }
    let mut dim = [0i64; 8];
    for (d, s) in dim.iter_mut().zip(h.dim.iter()) {
        *d = *s as i64;
    }
    let mut pixdim = [0f64; 8];
    for (d, s) in pixdim.iter_mut().zip(h.pixdim.iter()) {
        *d = *s as f64;
    }
    let row = |r: [f32; 4]| r.map(|v| v as f64);
    Ok(Header {
        version: 1,
        dim,
        datatype: h.datatype,
        pixdim,
        vox_offset: h.vox_offset.max(352.0) as u64,
        scl_slope: h.scl_slope as f64,
        scl_inter: h.scl_inter as f64,
        qform_code: h.qform_code as i32,
        sform_code: h.sform_code as i32,
        quatern: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
        qoffset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
        srow: [row(h.srow_x), row(h.srow_y), row(h.srow_z)],
        endianness: h.endianness,
    })
}

/// Hand-written because `nifti` 0.18 does not parse NIfTI-2 (see module docs). Offsets are
/// from the NIfTI-2 standard header (`nifti2.h`).
fn parse_nifti2(path: &Path, b: &[u8], e: Endianness) -> Result<Header, ImagingError> {
    if b.len() < 540 {
        return Err(nerr(path, "NIfTI-2 header shorter than 540 bytes"));
    }
    if &b[4..8] != b"n+2\0" {
        return Err(nerr(path, "NIfTI-2 magic is not n+2"));
    }
    let big = matches!(e, Endianness::Big);
    let i16_at = |o: usize| {
        let a: [u8; 2] = b[o..o + 2].try_into().unwrap();
        if big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    };
    let i32_at = |o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if big {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    };
    let i64_at = |o: usize| {
        let a: [u8; 8] = b[o..o + 8].try_into().unwrap();
        if big {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        }
    };
    let f64_at = |o: usize| {
        let a: [u8; 8] = b[o..o + 8].try_into().unwrap();
        if big {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    };
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = i64_at(16 + 8 * i);
        pixdim[i] = f64_at(104 + 8 * i);
    }
    let mut srow = [[0f64; 4]; 3];
    for r in 0..3 {
        for c in 0..4 {
            srow[r][c] = f64_at(400 + 32 * r + 8 * c);
        }
    }
    let vox_offset = i64_at(168);
    Ok(Header {
        version: 2,
        dim,
        datatype: i16_at(12),
        pixdim,
        vox_offset: vox_offset.max(544) as u64,
        scl_slope: f64_at(176),
        scl_inter: f64_at(184),
        qform_code: i32_at(344),
        sform_code: i32_at(348),
        quatern: [f64_at(352), f64_at(360), f64_at(368)],
        qoffset: [f64_at(376), f64_at(384), f64_at(392)],
        srow,
        endianness: e,
    })
}

/// The voxel→world affine in NIfTI's RAS+, by the standard's precedence: sform when
/// `sform_code > 0`, else qform when `qform_code > 0`, else pixdim scaling ("method 1").
fn ras_affine(h: &Header) -> ([[f64; 4]; 3], &'static str) {
    if h.sform_code > 0 {
        return (h.srow, "sform");
    }
    let dx = h.pixdim[1].abs().max(f64::MIN_POSITIVE);
    let dy = h.pixdim[2].abs().max(f64::MIN_POSITIVE);
    let dz = h.pixdim[3].abs().max(f64::MIN_POSITIVE);
    if h.qform_code > 0 {
        let [b, c, d] = h.quatern;
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let mut m = [[0f64; 4]; 3];
        for i in 0..3 {
            m[i][0] = r[i][0] * dx;
            m[i][1] = r[i][1] * dy;
            m[i][2] = r[i][2] * dz * qfac;
            m[i][3] = h.qoffset[i];
        }
        return (m, "qform");
    }
    (
        [
            [dx, 0.0, 0.0, 0.0],
            [0.0, dy, 0.0, 0.0],
            [0.0, 0.0, dz, 0.0],
        ],
        "pixdim (no sform/qform)",
    )
}

fn nifti_type(code: i16) -> Option<NiftiType> {
    NiftiHeader {
        datatype: code,
        ..NiftiHeader::default()
    }
    .data_type()
    .ok()
}

fn datatype_name(code: i16) -> String {
    nifti_type(code)
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|| format!("code {code}"))
}

/// Read one 3-D volume (f32, `scl_slope`/`scl_inter` applied) from a NIfTI-1 or NIfTI-2 file,
/// `.nii` or `.nii.gz`, either byte order, oriented in LPS.
pub fn read_volume(path: &Path, opts: &NiftiReadOptions) -> Result<Volume, ImagingError> {
    let bytes = read_bytes(path)?;
    volume_from_bytes(path, &bytes, opts)
}

/// [`read_volume`] of a NIfTI file already in memory (`.nii` bytes, or gzip-compressed: told
/// by the gzip magic). `name` stands for the file in errors and provenance (an upload's field
/// name, a request id): the same checks and messages as a file on disk.
pub fn read_volume_bytes(
    name: &Path,
    bytes: Vec<u8>,
    opts: &NiftiReadOptions,
) -> Result<Volume, ImagingError> {
    let bytes = gunzip_if_needed(name, bytes)?;
    volume_from_bytes(name, &bytes, opts)
}

fn volume_from_bytes(
    path: &Path,
    bytes: &[u8],
    opts: &NiftiReadOptions,
) -> Result<Volume, ImagingError> {
    let h = parse_header(path, bytes)?;
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(nerr(path, format!("dim[0] = {ndim} is not 1..7")));
    }
    let d = |i: usize| -> i64 {
        if (i as i64) <= ndim {
            h.dim[i].max(1)
        } else {
            1
        }
    };
    if (1..=7).any(|i| (i as i64) <= ndim && h.dim[i] < 1) {
        return Err(nerr(path, format!("non-positive dimension in {:?}", h.dim)));
    }
    let (nx, ny, nz) = (d(1) as usize, d(2) as usize, d(3) as usize);
    // Sizes in u128 first: a corrupt header must give an error, not an overflow.
    let total: u128 = (1..=7).map(|i| d(i) as u128).product();
    if total > (1u128 << 40) {
        return Err(nerr(path, format!("implausible dimensions {:?}", h.dim)));
    }
    let nvol: usize = (4..=7).map(|i| d(i) as usize).product();
    if opts.volume_index >= nvol {
        return Err(nerr(
            path,
            format!(
                "volume index {} out of range: file has {nvol} volume(s)",
                opts.volume_index
            ),
        ));
    }
    let dtype = nifti_type(h.datatype)
        .ok_or_else(|| nerr(path, format!("unknown datatype code {}", h.datatype)))?;
    let esize = dtype.size_of();
    if matches!(
        dtype,
        NiftiType::Rgb24 | NiftiType::Rgba32 | NiftiType::Complex64 | NiftiType::Complex128
    ) || esize == 0
    {
        return Err(nerr(
            path,
            format!(
                "datatype {} is not a scalar intensity type",
                datatype_name(h.datatype)
            ),
        ));
    }
    let nvox = nx * ny * nz;
    // Every volume the header declares must be there, not only the one asked for: a file cut
    // short is a damaged copy, and reading its first volume as if nothing were wrong would
    // hide that from whoever sent it.
    let declared_end = h.vox_offset as u128 + total * (esize as u128);
    if (bytes.len() as u128) < declared_end {
        return Err(ImagingError::Truncated {
            path: path.to_path_buf(),
            reason: format!(
                "the header declares {} voxel(s) of {esize} byte(s) ({} volume(s) of {nx}×{ny}×{nz}) from byte {}, so {declared_end} bytes; the file (decompressed) has {}: {} bytes missing",
                total,
                nvol,
                h.vox_offset,
                bytes.len(),
                declared_end - bytes.len() as u128
            ),
        });
    }
    let start128 =
        h.vox_offset as u128 + (opts.volume_index as u128) * (nvox as u128) * (esize as u128);
    let end128 = start128 + (nvox as u128) * (esize as u128);
    let (start, end) = (start128 as usize, end128 as usize);
    let raw = bytes[start..end].to_vec();
    let data = typed_to_f32(raw, h.endianness, dtype)
        .map_err(|e| nerr(path, format!("datatype {}: {e}", datatype_name(h.datatype))))?;
    // scl_slope == 0 means "no scaling" in the standard.
    let (slope, inter) = if h.scl_slope != 0.0 && h.scl_slope.is_finite() {
        (
            h.scl_slope,
            if h.scl_inter.is_finite() {
                h.scl_inter
            } else {
                0.0
            },
        )
    } else {
        (1.0, 0.0)
    };
    let data = if slope != 1.0 || inter != 0.0 {
        data.into_iter()
            .map(|v| (v as f64 * slope + inter) as f32)
            .collect()
    } else {
        data
    };
    let (ras, which) = ras_affine(&h);
    let mut lps = ras;
    for c in 0..4 {
        lps[0][c] = -lps[0][c];
        lps[1][c] = -lps[1][c];
    }
    let mut spacing = [0f64; 3];
    let mut direction = [[0f64; 3]; 3];
    for c in 0..3 {
        let n = (0..3).map(|r| lps[r][c] * lps[r][c]).sum::<f64>().sqrt();
        if !(n.is_finite() && n > 0.0) {
            return Err(nerr(
                path,
                format!("{which} affine has a zero or non-finite column {c}"),
            ));
        }
        spacing[c] = n;
        for r in 0..3 {
            direction[r][c] = lps[r][c] / n;
        }
    }
    let modality = opts
        .modality
        .clone()
        .unwrap_or_else(|| Modality::Other("NIfTI".into()));
    let mut vol = Volume::new(data, [nx, ny, nz], spacing, modality).map_err(|source| {
        ImagingError::Volume {
            path: path.to_path_buf(),
            error: source,
        }
    })?;
    vol.origin = [lps[0][3], lps[1][3], lps[2][3]];
    vol.direction = direction;
    let mut notes = vec![format!(
        "NIfTI-{} {}, orientation from {which}, RAS converted to LPS",
        h.version,
        datatype_name(h.datatype)
    )];
    if slope != 1.0 || inter != 0.0 {
        notes.push(format!("scl_slope {slope} / scl_inter {inter} applied"));
    }
    if nvol > 1 {
        notes.push(format!(
            "4-D file: volume {} of {nvol} taken",
            opts.volume_index
        ));
    }
    vol.provenance = Provenance {
        sources: vec![path.display().to_string()],
        series_uid: None,
        notes,
        warnings: Vec::new(),
    };
    Ok(vol)
}

/// Stored values → f32. The crate reads each type with the file's byte order; the cast to f32
/// is ours (exact for every 8/16-bit type; 32/64-bit integers above 2^24 lose precision, as
/// they would in any f32 volume).
fn typed_to_f32(raw: Vec<u8>, e: Endianness, t: NiftiType) -> Result<Vec<f32>, nifti::NiftiError> {
    fn cast<T: DataElement + Copy>(
        raw: Vec<u8>,
        e: Endianness,
        t: NiftiType,
        f: impl Fn(T) -> f32,
    ) -> Result<Vec<f32>, nifti::NiftiError> {
        Ok(T::from_raw_vec_validated(raw, e, t)?
            .into_iter()
            .map(f)
            .collect())
    }
    match t {
        NiftiType::Uint8 => cast::<u8>(raw, e, t, |v| v as f32),
        NiftiType::Int8 => cast::<i8>(raw, e, t, |v| v as f32),
        NiftiType::Int16 => cast::<i16>(raw, e, t, |v| v as f32),
        NiftiType::Uint16 => cast::<u16>(raw, e, t, |v| v as f32),
        NiftiType::Int32 => cast::<i32>(raw, e, t, |v| v as f32),
        NiftiType::Uint32 => cast::<u32>(raw, e, t, |v| v as f32),
        NiftiType::Int64 => cast::<i64>(raw, e, t, |v| v as f32),
        NiftiType::Uint64 => cast::<u64>(raw, e, t, |v| v as f32),
        NiftiType::Float32 => f32::from_raw_vec_validated(raw, e, t),
        NiftiType::Float64 => cast::<f64>(raw, e, t, |v| v as f32),
        other => Err(nifti::NiftiError::UnsupportedDataType(other)),
    }
}

/// True when the path names a NIfTI file (`.nii` or `.nii.gz`).
pub fn is_nifti_path(path: &Path) -> bool {
    let s = path.to_string_lossy().to_ascii_lowercase();
    s.ends_with(".nii") || s.ends_with(".nii.gz")
}

/// Write `vol` as float32 NIfTI-1 (gzip when the path ends in `.gz`), sform and qform set from
/// the volume's geometry (code 1, scanner anatomical).
pub fn write_volume(path: &Path, vol: &Volume) -> Result<(), ImagingError> {
    write_nifti1(path, vol, 16, 32, &f32_body(vol))
}

fn f32_body(vol: &Volume) -> Vec<u8> {
    let mut body = Vec::with_capacity(vol.data.len() * 4);
    for v in &vol.data {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body
}

/// Write `vol` as a uint8 label mask (values rounded, clamped to 0..=255).
pub fn write_mask(path: &Path, vol: &Volume) -> Result<(), ImagingError> {
    let body: Vec<u8> = vol
        .data
        .iter()
        .map(|v| {
            if v.is_finite() {
                v.round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    write_nifti1(path, vol, 2, 8, &body)
}

/// Write `vol` as an int16 label mask (values rounded, clamped to the i16 range).
pub fn write_mask_i16(path: &Path, vol: &Volume) -> Result<(), ImagingError> {
    let mut body = Vec::with_capacity(vol.data.len() * 2);
    for v in &vol.data {
        let x = if v.is_finite() {
            v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
        } else {
            0
        };
        body.extend_from_slice(&x.to_le_bytes());
    }
    write_nifti1(path, vol, 4, 16, &body)
}

/// Quaternion (b, c, d) and qfac of a direction matrix, after the NIfTI reference
/// `nifti_mat44_to_quatern`: a left-handed matrix is made proper by flipping its third column,
/// recorded as qfac = -1.
fn quatern_of(dir: &[[f64; 3]; 3]) -> ([f64; 3], f64) {
    let mut r = *dir;
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let trace1 = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d);
    if trace1 > 0.5 {
        let aa = 0.5 * (r[0][0] + r[1][1] + r[2][2] + 1.0).sqrt();
        a = aa;
        b = 0.25 * (r[2][1] - r[1][2]) / aa;
        c = 0.25 * (r[0][2] - r[2][0]) / aa;
        d = 0.25 * (r[1][0] - r[0][1]) / aa;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            let bb = 0.5 * xd.sqrt();
            b = bb;
            c = 0.25 * (r[0][1] + r[1][0]) / bb;
            d = 0.25 * (r[0][2] + r[2][0]) / bb;
            a = 0.25 * (r[2][1] - r[1][2]) / bb;
        } else if yd > 1.0 {
            let cc = 0.5 * yd.sqrt();
            c = cc;
            b = 0.25 * (r[0][1] + r[1][0]) / cc;
            d = 0.25 * (r[1][2] + r[2][1]) / cc;
            a = 0.25 * (r[0][2] - r[2][0]) / cc;
        } else {
            let dd = 0.5 * zd.sqrt();
            d = dd;
            b = 0.25 * (r[0][2] + r[2][0]) / dd;
            c = 0.25 * (r[1][2] + r[2][1]) / dd;
            a = 0.25 * (r[1][0] - r[0][1]) / dd;
        }
    }
    let (b, c, d) = if a < 0.0 { (-b, -c, -d) } else { (b, c, d) };
    ([b, c, d], qfac)
}

fn write_nifti1(
    path: &Path,
    vol: &Volume,
    datatype: i16,
    bitpix: i16,
    body: &[u8],
) -> Result<(), ImagingError> {
    let bytes = nifti1_bytes(path, vol, datatype, bitpix, body, is_gz(path))?;
    std::fs::write(path, bytes).map_err(|e| ImagingError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// [`write_volume`] into memory: float32 NIfTI-1 bytes, gzip-compressed when `gzip`.
pub fn volume_bytes(vol: &Volume, gzip: bool) -> Result<Vec<u8>, ImagingError> {
    nifti1_bytes(Path::new("<memory>"), vol, 16, 32, &f32_body(vol), gzip)
}

/// A NIfTI-1 file's bytes (`path` names it in errors).
fn nifti1_bytes(
    path: &Path,
    vol: &Volume,
    datatype: i16,
    bitpix: i16,
    body: &[u8],
    gzip: bool,
) -> Result<Vec<u8>, ImagingError> {
    let werr = |reason: String| ImagingError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if vol.dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(werr(format!(
            "dims {:?} do not fit a NIfTI-1 header (1..=32767)",
            vol.dims
        )));
    }
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut [u8], o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 = |h: &mut [u8], o: usize, v: i32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8], o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r'; // regular
    put_i16(&mut h, 40, 3);
    for i in 0..3 {
        put_i16(&mut h, 42 + 2 * i, vol.dims[i] as i16);
    }
    for i in 3..7 {
        put_i16(&mut h, 42 + 2 * i, 1);
    }
    put_i16(&mut h, 70, datatype);
    put_i16(&mut h, 72, bitpix);
    // Affine in RAS: negate the L and P rows of our LPS affine.
    let a = vol.affine();
    let mut ras = [[0f64; 4]; 3];
    for r in 0..3 {
        for c in 0..4 {
            ras[r][c] = if r < 2 { -a[r][c] } else { a[r][c] };
        }
    }
    let mut dir_ras = vol.direction;
    for c in 0..3 {
        dir_ras[0][c] = -dir_ras[0][c];
        dir_ras[1][c] = -dir_ras[1][c];
    }
    let (q, qfac) = quatern_of(&dir_ras);
    put_f32(&mut h, 76, qfac as f32);
    for i in 0..3 {
        put_f32(&mut h, 80 + 4 * i, vol.spacing[i] as f32);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, s
    let descrip = b"HemorrhageNet hn-imaging";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, 1); // qform_code: scanner anat
    put_i16(&mut h, 254, 1); // sform_code: scanner anat
    for i in 0..3 {
        put_f32(&mut h, 256 + 4 * i, q[i] as f32);
        put_f32(&mut h, 268 + 4 * i, ras[i][3] as f32);
    }
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, ras[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: extension flag 0 (no extensions).
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 2),
            flate2::Compression::new(6),
        );
        gz.write_all(&h)
            .and_then(|_| gz.write_all(body))
            .and_then(|_| gz.finish())
            .map_err(|e| werr(e.to_string()))
    } else {
        let mut out = h;
        out.extend_from_slice(body);
        Ok(out)
    }
}
