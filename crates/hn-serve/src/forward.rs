//! `--forward AE@HOST:PORT`: the SR and overlay series of each scored study go back to the
//! PACS by C-STORE (dicom-ul client), with retries and exponential backoff; each attempt's
//! outcome is kept in the study's row and counted in the metrics.

use std::io::Write;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};

use crate::dimse;

/// Where results are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    pub ae_title: String,
    /// `host:port`.
    pub address: String,
}

impl ForwardTarget {
    /// Parse `AE@HOST:PORT`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (ae, addr) = s
            .split_once('@')
            .ok_or_else(|| anyhow::anyhow!("--forward {s:?}: expected AE@HOST:PORT"))?;
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if ae.is_empty() || ae.len() > 16 || !ae.is_ascii() || !port_ok {
            anyhow::bail!("--forward {s:?}: expected AE@HOST:PORT (AE title of 1-16 characters)");
        }
        Ok(ForwardTarget {
            ae_title: ae.to_string(),
            address: addr.to_string(),
        })
    }
}

/// One object to send: SOP class, SOP instance and its Part-10 bytes.
pub struct Outgoing {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub part10: Vec<u8>,
}

/// Send `objects` in one association; every C-STORE must succeed.
pub fn send(target: &ForwardTarget, calling_ae: &str, objects: &[Outgoing]) -> Result<(), String> {
    let explicit = uids::EXPLICIT_VR_LITTLE_ENDIAN;
    let implicit = uids::IMPLICIT_VR_LITTLE_ENDIAN;
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae.to_string())
        .called_ae_title(target.ae_title.clone())
        .read_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60))
        .connection_timeout(Duration::from_secs(10));
    let mut classes: Vec<&str> = objects.iter().map(|o| o.sop_class_uid.as_str()).collect();
    classes.sort();
    classes.dedup();
    for c in &classes {
        opts = opts.with_presentation_context(
            c.to_string(),
            vec![explicit.to_string(), implicit.to_string()],
        );
    }
    let mut assoc = opts
        .establish(target.address.as_str())
        .map_err(|e| format!("association with {} failed: {e}", target.ae_title))?;
    for (i, o) in objects.iter().enumerate() {
        let pc = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance
                    && pc.abstract_syntax == o.sop_class_uid
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{} does not accept SOP class {}",
                    target.ae_title, o.sop_class_uid
                )
            })?;
        let ts = TransferSyntaxRegistry
            .get(pc.transfer_syntax.trim_end_matches('\0'))
            .ok_or_else(|| format!("unknown transfer syntax {}", pc.transfer_syntax))?;
        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(&o.part10[128..])
            .map_err(|e| format!("object {}: {e}", i + 1))?;
        let mut dataset = Vec::new();
        obj.write_dataset_with_ts(&mut dataset, ts)
            .map_err(|e| format!("object {}: {e}", i + 1))?;
        let cmd = dimse::store_request((i + 1) as u16, &o.sop_class_uid, &o.sop_instance_uid);
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: cmd,
                }],
            })
            .map_err(|e| format!("sending to {}: {e}", target.ae_title))?;
        {
            let mut w = assoc.send_pdata(pc.id);
            w.write_all(&dataset)
                .map_err(|e| format!("sending to {}: {e}", target.ae_title))?;
        }
        match assoc.receive() {
            Ok(Pdu::PData { data }) => {
                let rsp = data
                    .first()
                    .ok_or("empty response")
                    .and_then(|v| dimse::parse(&v.data).map_err(|_| "unreadable response"))?;
                match rsp.status {
                    Some(0) | Some(0xB000) | Some(0xB007) | Some(0xB006) => {}
                    s => {
                        let _ = assoc.abort();
                        return Err(format!(
                            "{} refused object {} with status {:#06x}",
                            target.ae_title,
                            i + 1,
                            s.unwrap_or(0xFFFF)
                        ));
                    }
                }
            }
            Ok(other) => {
                let _ = assoc.abort();
                return Err(format!(
                    "unexpected answer from {}: {other:?}",
                    target.ae_title
                ));
            }
            Err(e) => return Err(format!("no answer from {}: {e}", target.ae_title)),
        }
    }
    let _ = assoc.release();
    Ok(())
}

/// Delay before retry `attempt` (1-based): `base · 2^(attempt−1)`, at most `max`.
pub fn backoff(attempt: u32, base: f64, max: f64) -> f64 {
    (base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_backoff() {
        let t = ForwardTarget::parse("PACS@10.0.0.5:104").unwrap();
        assert_eq!(
            (t.ae_title.as_str(), t.address.as_str()),
            ("PACS", "10.0.0.5:104")
        );
        for bad in [
            "PACS",
            "@h:1",
            "P@h",
            "P@h:0",
            "P@:104",
            "WAY-TOO-LONG-AE-TITLE@h:1",
        ] {
            assert!(ForwardTarget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(backoff(1, 2.0, 300.0), 2.0);
        assert_eq!(backoff(4, 2.0, 300.0), 16.0);
        assert_eq!(backoff(20, 2.0, 300.0), 300.0);
    }
}
