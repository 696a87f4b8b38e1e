//! The DICOM node: C-ECHO and C-STORE SCP over dicom-ul (the dicom-rs upper layer), one
//! thread per association, at most `limits.max_associations` at once (more are rejected with
//! A-ASSOCIATE-RJ), calling AE titles checked against the allow-list.
//!
//! A C-STORE is answered success only after the instance is fsynced and recorded
//! ([`crate::ingest::admit`]); a full queue or a full disk is answered A700 (out of
//! resources), a non-CT object 0122 (SOP class not supported), a broken one C000.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use dicom_ul::{Pdu, ServerAssociationOptions};

use crate::App;
use crate::dimse;
use crate::ingest::{admit, parse_dataset};

/// Who may associate: the allow-list of calling AE titles (empty = any), and nobody while
/// the association limit is reached.
struct NodeAccess {
    allowed: Vec<String>,
    full: bool,
}

impl AccessControl for NodeAccess {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        _called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|a| a.trim() == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if self.full {
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        }
        Ok(())
    }
}

/// Accept associations until shutdown, then wait (bounded) for the open ones to end.
pub fn run(listener: TcpListener, app: Arc<App>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("DICOM listener: {e}");
        return;
    }
    let mut handles = Vec::new();
    while !app.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let app = app.clone();
                let full = app.metrics.associations_active.get() as usize
                    >= app.cfg.limits.max_associations;
                app.metrics.associations_active.inc();
                handles.push(std::thread::spawn(move || {
                    association(stream, &app, full);
                    app.metrics.associations_active.dec();
                }));
                handles.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("DICOM listener: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn association(stream: TcpStream, app: &App, full: bool) {
    let mut opts = ServerAssociationOptions::new()
        .ae_access_control(NodeAccess {
            allowed: app.cfg.allowed_calling_ae_titles.clone(),
            full,
        })
        .ae_title(app.cfg.ae_title.clone())
        .strict(false)
        .read_timeout(Duration::from_secs(120))
        .write_timeout(Duration::from_secs(120))
        .with_abstract_syntax(dicom_dictionary_std::uids::VERIFICATION);
    for class in &app.accepted_sop_classes {
        opts = opts.with_abstract_syntax(*class);
    }
    for ts in TransferSyntaxRegistry.iter() {
        if !ts.is_unsupported() {
            opts = opts.with_transfer_syntax(ts.uid());
        }
    }
    app.metrics.associations.inc();
    let mut assoc = match opts.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            app.metrics.associations_rejected.inc();
            tracing::info!("association refused or failed: {e}");
            return;
        }
    };
    let mut command: Vec<u8> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut too_big = false;
    let mut pending: Option<dimse::Command> = None;
    let max = app.cfg.limits.max_instance_bytes;
    loop {
        let pdu = match assoc.receive() {
            Ok(p) => p,
            Err(e) => {
                tracing::info!("association ended: {e}");
                return;
            }
        };
        match pdu {
            Pdu::PData { data: values } => {
                for pdv in values {
                    match pdv.value_type {
                        PDataValueType::Command => {
                            command.extend_from_slice(&pdv.data);
                            if !pdv.is_last {
                                continue;
                            }
                            let cmd = dimse::parse(&command);
                            command.clear();
                            match cmd {
                                Ok(c) if c.field == dimse::C_ECHO_RQ => {
                                    let rsp = dimse::echo_response(c.message_id);
                                    if send_command(&mut assoc, pdv.presentation_context_id, rsp)
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                                Ok(c) if c.field == dimse::C_STORE_RQ => {
                                    data.clear();
                                    too_big = false;
                                    pending = Some(c);
                                }
                                Ok(c) => {
                                    tracing::info!("ignoring DIMSE command {:#06x}", c.field);
                                }
                                Err(e) => {
                                    tracing::warn!("{e}");
                                    let _ = assoc.abort();
                                    return;
                                }
                            }
                        }
                        PDataValueType::Data => {
                            if data.len() + pdv.data.len() > max {
                                too_big = true;
                            } else if !too_big {
                                data.extend_from_slice(&pdv.data);
                            }
                            if !pdv.is_last {
                                continue;
                            }
                            let Some(cmd) = pending.take() else {
                                tracing::warn!("data set without a C-STORE request");
                                let _ = assoc.abort();
                                return;
                            };
                            let ts = assoc
                                .presentation_contexts()
                                .iter()
                                .find(|pc| pc.id == pdv.presentation_context_id)
                                .map(|pc| pc.transfer_syntax.clone())
                                .unwrap_or_default();
                            let status = store(app, &data, &ts, too_big);
                            data.clear();
                            let rsp = dimse::store_response(
                                cmd.message_id,
                                &cmd.affected_sop_class_uid,
                                &cmd.affected_sop_instance_uid,
                                status,
                            );
                            if send_command(&mut assoc, pdv.presentation_context_id, rsp).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                return;
            }
            Pdu::AbortRQ { .. } => return,
            _ => {}
        }
    }
}

fn send_command<S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket>(
    assoc: &mut dicom_ul::ServerAssociation<S>,
    pc: u8,
    bytes: Vec<u8>,
) -> Result<(), ()> {
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .map_err(|e| tracing::warn!("cannot answer the SCU: {e}"))
}

/// Admit one received data set; the C-STORE status.
fn store(app: &App, data: &[u8], ts: &str, too_big: bool) -> u16 {
    app.metrics.instances_received.inc();
    let part = "C-STORE instance";
    let result = if too_big {
        Err(crate::ingest::IngestError::TooLarge {
            part: part.into(),
            reason: format!("larger than {} bytes", app.cfg.limits.max_instance_bytes),
        })
    } else {
        parse_dataset(
            part,
            data,
            ts,
            app.cfg.limits.max_instance_bytes,
            &app.accepted_sop_classes,
        )
        .and_then(|inst| admit(&app.store, &app.cfg, &inst, part).map(|_| inst))
    };
    match result {
        Ok(inst) => {
            app.note_received(&inst.study_instance_uid);
            0x0000
        }
        Err(e) => {
            app.metrics.instances_refused.inc();
            if matches!(e, crate::ingest::IngestError::Store(_)) {
                app.set_unready(&e.to_string());
            }
            tracing::warn!("C-STORE refused: {e}");
            e.dimse_status()
        }
    }
}
