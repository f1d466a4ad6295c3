//! Fixtures for the engine's unit tests: systems enrolled in an in-process store, with the inventories their agents would have reported.

use crate::engine::state::SharedState;
use crate::store::{CertRecord, EnrollError, SystemRecord, TokenRecord};
use nasfleet_proto::v1::{Dataset, Inventory, Pool, Snapshot, Task};
use prost::Message;

pub fn snapshot(name: &str, guid: u64, creation_unix: i64) -> Snapshot {
    Snapshot {
        name: name.into(),
        guid,
        creation_unix,
        ..Default::default()
    }
}

/// An inventory with these datasets (their pools derived from the names)
/// and snapshots.
pub fn inventory_of(datasets: &[&str], snapshots: Vec<Snapshot>) -> Inventory {
    let mut pools: Vec<Pool> = Vec::new();
    for dataset in datasets {
        let pool = dataset.split('/').next().unwrap_or(dataset);
        if !pools.iter().any(|p| p.name == pool) {
            pools.push(Pool {
                name: pool.into(),
                ..Default::default()
            });
        }
    }
    Inventory {
        pools,
        datasets: datasets
            .iter()
            .map(|d| Dataset {
                name: (*d).into(),
                ..Default::default()
            })
            .collect(),
        snapshots,
        ..Default::default()
    }
}

/// Enrolls each system (through a token, as a real join does) and stores
/// its inventory bytes (`None`: it never reported), and stores `tasks`.
pub async fn store(state: &SharedState, tasks: Vec<Task>, systems: Vec<(&str, Option<Vec<u8>>)>) {
    let systems: Vec<(String, Option<Vec<u8>>)> = systems
        .into_iter()
        .map(|(n, b)| (n.to_owned(), b))
        .collect();
    state
        .store
        .write(move |w| {
            for task in &tasks {
                w.put_task(task)?;
            }
            for (name, inventory) in &systems {
                w.put_token(
                    name,
                    &TokenRecord {
                        created_unix_ms: 0,
                        expires_unix_ms: i64::MAX,
                        created_by: "test".into(),
                        used_by: None,
                        used_unix_ms: None,
                    },
                )?;
                let system = SystemRecord {
                    name: name.clone(),
                    enrolled_unix_ms: 0,
                    cert_serial: format!("serial-{name}"),
                    cert_expires_unix_ms: 0,
                    next_cert_serial: None,
                    next_cert_expires_unix_ms: 0,
                    last_seen_unix_ms: 0,
                    address: String::new(),
                    agent_version: String::new(),
                    pools: Vec::new(),
                    inventory_unix_ms: 0,
                    inventory_problem: None,
                };
                let cert = CertRecord {
                    principal: format!("system:{name}"),
                    role: None,
                    issued_unix_ms: 0,
                    revoked_unix_ms: None,
                };
                match w.enroll(name, 1, &system, &format!("serial-{name}"), &cert) {
                    Ok(()) => {}
                    Err(EnrollError::Store(e)) => return Err(e),
                    Err(EnrollError::Refused(r)) => panic!("fixture enrollment refused: {r}"),
                }
                if let Some(bytes) = inventory {
                    // Bytes that are no inventory stay as they are: tests of unreadable ones.
                    match Inventory::decode(bytes.as_slice()) {
                        Ok(decoded) => {
                            let (header, datasets) = crate::store::stored_form(decoded);
                            w.put_inventory(name, &header, &datasets)?;
                        }
                        Err(_) => w.put_inventory(name, bytes, &Default::default())?,
                    }
                }
            }
            Ok(())
        })
        .await
        .expect("fixture writes succeed");
}

/// [`store`] for systems that reported `inventory`.
pub async fn enroll(state: &SharedState, name: &str, inventory: &Inventory) {
    store(
        state,
        Vec::new(),
        vec![(name, Some(inventory.encode_to_vec()))],
    )
    .await;
}
