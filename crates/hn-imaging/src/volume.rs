//! The one volume type shared by every layer.

use serde::{Deserialize, Serialize};

/// What kind of values a [`Volume`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modality {
    /// CT: voxel values are Hounsfield units.
    Ct,
    /// MR: voxel values are stored intensities (rescaled where the file says so), not HU.
    Mr,
    /// Anything else (NIfTI without modality information, NM, ...): values as stored.
    Other(String),
}

impl Modality {
    /// Map a DICOM Modality code (0008,0060) to a [`Modality`].
    pub fn from_dicom_code(code: &str) -> Self {
        match code.trim() {
            "CT" => Modality::Ct,
            "MR" => Modality::Mr,
            other => Modality::Other(other.to_string()),
        }
    }

    /// True when values are Hounsfield units.
    pub fn is_hu(&self) -> bool {
        matches!(self, Modality::Ct)
    }
}

/// Where a volume came from, for reports and error messages. Carries no patient identifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Source files or folder (paths as given by the user).
    pub sources: Vec<String>,
    /// SeriesInstanceUID when read from DICOM.
    pub series_uid: Option<String>,
    /// Human-readable notes: which series rule chose this series, header fixes applied, ...
    pub notes: Vec<String>,
    /// Problems found while reading that did not stop it (gaps, tilt, skipped files, ...).
    pub warnings: Vec<String>,
}

/// Errors from building or indexing a [`Volume`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VolumeError {
    #[error("voxel buffer has {got} values but dims {dims:?} need {want}")]
    BufferSize {
        got: usize,
        want: usize,
        dims: [usize; 3],
    },
    #[error("spacing {0:?} must be finite and > 0")]
    BadSpacing([f64; 3]),
}

/// An oriented 3-D voxel grid.
///
/// Layout: `data[(k * ny + j) * nx + i]` with `dims = [nx, ny, nz]` — `i` runs along a row
/// (DICOM columns), `j` down the rows, `k` across slices. World (LPS, mm) position of voxel
/// `(i, j, k)` is `origin + direction · (spacing ⊙ (i, j, k))`, where the columns of
/// `direction` are the unit vectors of the i, j and k axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub data: Vec<f32>,
    pub dims: [usize; 3],
    /// Voxel size in mm along i, j, k.
    pub spacing: [f64; 3],
    /// World (LPS) position of voxel (0, 0, 0) in mm.
    pub origin: [f64; 3],
    /// `direction[r][c]`: row r (L, P, S component) of the unit vector of axis c.
    pub direction: [[f64; 3]; 3],
    pub modality: Modality,
    pub provenance: Provenance,
}

/// A voxel grid in world coordinates (a [`Volume`]'s geometry without its values): what
/// sequences of one MR study are resampled onto.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub direction: [[f64; 3]; 3],
}

impl Volume {
    /// A volume with identity direction and zero origin.
    pub fn new(
        data: Vec<f32>,
        dims: [usize; 3],
        spacing: [f64; 3],
        modality: Modality,
    ) -> Result<Self, VolumeError> {
        let want = dims[0] * dims[1] * dims[2];
        if data.len() != want {
            return Err(VolumeError::BufferSize {
                got: data.len(),
                want,
                dims,
            });
        }
        if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(VolumeError::BadSpacing(spacing));
        }
        Ok(Volume {
            data,
            dims,
            spacing,
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            modality,
            provenance: Provenance::default(),
        })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the volume has no voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Linear index of voxel (i, j, k).
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (k * self.dims[1] + j) * self.dims[0] + i
    }

    /// Value at voxel (i, j, k). Panics when out of bounds, like slice indexing.
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[self.index(i, j, k)]
    }

    /// One axial slice (k) as a row-major `ny × nx` slice of the buffer.
    pub fn slice(&self, k: usize) -> &[f32] {
        let n = self.dims[0] * self.dims[1];
        &self.data[k * n..(k + 1) * n]
    }

    /// 4×4 voxel-index → world (LPS, mm) affine.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = self.direction[r][c] * self.spacing[c];
            }
            a[r][3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// World (LPS, mm) position of a (possibly fractional) voxel index.
    pub fn world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            for c in 0..3 {
                *pr += self.direction[r][c] * self.spacing[c] * ijk[c];
            }
        }
        p
    }

    /// The (fractional) voxel index of a world (LPS, mm) position: the inverse of
    /// [`Volume::world`]. `None` when the direction matrix is singular.
    pub fn index_of(&self, w: [f64; 3]) -> Option<[f64; 3]> {
        let a = self.affine();
        let m: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| a[r][c]));
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        if det.abs() < 1e-12 {
            return None;
        }
        let d = [w[0] - a[0][3], w[1] - a[1][3], w[2] - a[2][3]];
        // Cramer's rule: column c replaced by d.
        let solve = |c: usize| {
            let mut mc = m;
            for r in 0..3 {
                mc[r][c] = d[r];
            }
            (mc[0][0] * (mc[1][1] * mc[2][2] - mc[1][2] * mc[2][1])
                - mc[0][1] * (mc[1][0] * mc[2][2] - mc[1][2] * mc[2][0])
                + mc[0][2] * (mc[1][0] * mc[2][1] - mc[1][1] * mc[2][0]))
                / det
        };
        Some([solve(0), solve(1), solve(2)])
    }

    /// The voxel grid without the values.
    pub fn grid(&self) -> Grid {
        Grid {
            dims: self.dims,
            spacing: self.spacing,
            origin: self.origin,
            direction: self.direction,
        }
    }

    /// Minimum and maximum value (NaN-free volumes); `None` when empty.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        let mut it = self.data.iter().copied();
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
    }

    /// A new volume with the same geometry and other voxel values (e.g. a mask or heatmap).
    pub fn with_data(&self, data: Vec<f32>) -> Result<Self, VolumeError> {
        if data.len() != self.data.len() {
            return Err(VolumeError::BufferSize {
                got: data.len(),
                want: self.data.len(),
                dims: self.dims,
            });
        }
        Ok(Volume {
            data,
            ..self.clone_geometry()
        })
    }

    fn clone_geometry(&self) -> Self {
        Volume {
            data: Vec::new(),
            dims: self.dims,
            spacing: self.spacing,
            origin: self.origin,
            direction: self.direction,
            modality: self.modality.clone(),
            provenance: self.provenance.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_buffer_size() {
        let err = Volume::new(vec![0.0; 5], [2, 2, 2], [1.0; 3], Modality::Ct).unwrap_err();
        assert!(matches!(err, VolumeError::BufferSize { want: 8, .. }));
    }

    #[test]
    fn indexing_and_affine_agree() {
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let mut v = Volume::new(data, [4, 3, 2], [0.5, 0.5, 3.0], Modality::Ct).unwrap();
        v.origin = [10.0, 20.0, 30.0];
        assert_eq!(v.get(3, 2, 1), 23.0);
        assert_eq!(v.world([2.0, 1.0, 1.0]), [11.0, 20.5, 33.0]);
        assert_eq!(v.affine()[2][2], 3.0);
        assert_eq!(v.min_max(), Some((0.0, 23.0)));
    }
}
