//! DIMSE command sets (PS3.7 §9, §E): C-ECHO and C-STORE requests and responses, always in
//! Implicit VR Little Endian. dicom-ul carries PDUs; the command sets on them are small
//! data sets built here with dicom-object.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// CommandDataSetType: no data set follows.
const NO_DATA_SET: u16 = 0x0101;
/// CommandDataSetType: a data set follows (any value other than 0x0101).
const DATA_SET: u16 = 0x0000;

/// A parsed command set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub status: Option<u16>,
}

fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).to_string()
}

/// Parse a command set.
pub fn parse(bytes: &[u8]) -> Result<Command, String> {
    check_command_shape(bytes)?;
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("unreadable DIMSE command: {e}"))?;
    let u16_of = |tag| -> Option<u16> { obj.element(tag).ok()?.to_int::<u16>().ok() };
    let str_of = |tag| -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok().map(|s| trim(&s)))
            .unwrap_or_default()
    };
    Ok(Command {
        field: u16_of(tags::COMMAND_FIELD).ok_or("DIMSE command without CommandField")?,
        message_id: u16_of(tags::MESSAGE_ID)
            .or_else(|| u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO))
            .unwrap_or(0),
        affected_sop_class_uid: str_of(tags::AFFECTED_SOP_CLASS_UID),
        affected_sop_instance_uid: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
        status: u16_of(tags::STATUS),
    })
}

/// A command set holds only group-0000 elements with defined lengths (PS3.7 §6.3, E.1), so
/// anything else is refused before dicom-rs parses it — it would allocate a declared length
/// before reading it (an 83-byte command found by the `dimse_command` fuzz target asked for
/// gigabytes through undefined lengths; docs/FUZZING.md).
fn check_command_shape(b: &[u8]) -> Result<(), String> {
    let bad = |m: String| Err(format!("malformed DIMSE command: {m}"));
    let mut pos = 0;
    while pos < b.len() {
        if pos + 8 > b.len() {
            return bad(format!("{} stray byte(s) at the end", b.len() - pos));
        }
        let group = u16::from_le_bytes([b[pos], b[pos + 1]]);
        let elem = u16::from_le_bytes([b[pos + 2], b[pos + 3]]);
        let len = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]) as usize;
        if group != 0x0000 {
            return bad(format!(
                "element ({group:04X},{elem:04X}) outside the command group"
            ));
        }
        if len > b.len() - pos - 8 {
            return bad(format!(
                "element (0000,{elem:04X}) declares {len} bytes, {} remain",
                b.len() - pos - 8
            ));
        }
        pos += 8 + len;
    }
    Ok(())
}

/// Encode a command set, CommandGroupLength first (computed over the rest).
fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter(elements);
    let mut rest = Vec::new();
    obj.write_dataset_with_ts(&mut rest, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("command sets of strings and integers always encode");
    let mut out = Vec::with_capacity(rest.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
    out.extend_from_slice(&(rest.len() as u32).to_le_bytes());
    out.extend_from_slice(&rest);
    out
}

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}
fn ui(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

pub fn echo_response(message_id: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, uids::VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, 0),
    ])
}

pub fn store_response(message_id: u16, class: &str, instance: &str, status: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, instance),
    ])
}

pub fn store_request(message_id: u16, class: &str, instance: &str) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, DATA_SET),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, instance),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_with_a_correct_group_length() {
        let b = store_response(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0xA700);
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, b.len() - 12);
        let c = parse(&b).unwrap();
        assert_eq!(c.field, C_STORE_RSP);
        assert_eq!(c.message_id, 7);
        assert_eq!(c.status, Some(0xA700));
        assert_eq!(c.affected_sop_instance_uid, "1.2.3");
        let r = parse(&store_request(9, "1.2", "1.2.3.4")).unwrap();
        assert_eq!((r.field, r.message_id), (C_STORE_RQ, 9));
        assert!(parse(b"junk").is_err());
    }

    #[test]
    fn the_fuzzed_command_with_undefined_lengths_is_refused_without_allocating() {
        let b = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/fuzz/dimse-oom-undefined-lengths.bin"
        ))
        .unwrap();
        let e = parse(&b).unwrap_err();
        assert!(
            e.contains("outside the command group") || e.contains("declares"),
            "{e}"
        );
    }
}
