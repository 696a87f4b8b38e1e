//! Attribute access: numbers, text and sequences from a data set, tolerant of VR UN and
//! malformed decimal strings.

#[allow(unused_imports)]
use super::*;

pub(super) fn dict_vr(tag: Tag) -> Option<VR> {
    StandardDataDictionary
        .by_tag(tag)
        .and_then(|e| match e.vr() {
            VirtualVr::Exact(vr) => Some(vr),
            VirtualVr::Xs => Some(VR::US),
            _ => None,
        })
}

/// Numbers of an attribute, or `Ok(None)` when absent/empty. Values stored with VR UN (common
/// after anonymisers or private re-encoding) are re-read by the dictionary's VR: reading the
/// raw bytes of a DS "-1024" as numbers would give ASCII codes and absurd HU.
pub(super) fn nums(obj: &InMemDicomObject, tag: Tag) -> Result<Option<Vec<f64>>, String> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.value().primitive().is_some_and(|p| p.multiplicity() == 0) {
        return Ok(None);
    }
    if e.vr() == VR::UN {
        let bytes = e.value().to_bytes().map_err(|e| e.to_string())?;
        return un_numbers(tag, &bytes).map(Some);
    }
    match e.value() {
        Value::Primitive(PrimitiveValue::Str(s)) => parse_ds(s).map(Some),
        Value::Primitive(PrimitiveValue::Strs(s)) => {
            let mut out = Vec::new();
            for x in s.iter() {
                out.extend(parse_ds(x)?);
            }
            Ok(Some(out))
        }
        v => v
            .to_multi_float64()
            .map(Some)
            .map_err(|e| format!("not numeric: {e}")),
    }
}

pub(super) fn parse_ds(s: &str) -> Result<Vec<f64>, String> {
    s.split('\\')
        .map(|x| x.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{x:?} is not a number"))
        })
        .collect()
}

pub(super) fn un_numbers(tag: Tag, b: &[u8]) -> Result<Vec<f64>, String> {
    match dict_vr(tag) {
        Some(VR::DS) | Some(VR::IS) => {
            let s = std::str::from_utf8(b).map_err(|_| "VR UN value is not text".to_string())?;
            parse_ds(s)
        }
        Some(VR::US) => Ok(b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
            .collect()),
        Some(VR::SS) => Ok(b
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
            .collect()),
        Some(VR::UL) => Ok(b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()),
        Some(VR::FL) => Ok(b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()),
        Some(VR::FD) => Ok(b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()),
        other => Err(format!("VR UN value with dictionary VR {other:?}")),
    }
}

pub(super) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = if e.vr() == VR::UN {
        let b = e.value().to_bytes().ok()?;
        String::from_utf8_lossy(&b).into_owned()
    } else {
        e.value().to_str().ok()?.into_owned()
    };
    let s = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

pub(super) fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag)?.value().items()
}

pub(super) fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    items(obj, tag)?.first()
}
