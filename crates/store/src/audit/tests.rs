use super::{AuditRecord, GENESIS, record_hash, verify};

fn chain(events: &[&str]) -> Vec<AuditRecord> {
    let mut prev = GENESIS.to_owned();
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let seq = index as u64 + 1;
            let hash = record_hash("run", seq, &prev, event);
            AuditRecord {
                seq,
                prev: std::mem::replace(&mut prev, hash.clone()),
                hash,
                event: (*event).to_owned(),
            }
        })
        .collect()
}

#[test]
fn an_intact_chain_verifies_and_every_kind_of_tampering_is_named() {
    let records = chain(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    assert_eq!(verify("run", &records), Ok(3));
    // The same records under another run id do not verify: records cannot be moved between runs.
    assert_eq!(verify("other", &records).map_err(|b| b.position), Err(1));

    let mut edited = records.clone();
    edited[1].event = "{\"b\":20}".into();
    let broken = verify("run", &edited).expect_err("edited");
    assert_eq!(broken.position, 2);
    assert!(broken.reason.contains("edited"), "{broken}");

    let mut deleted = records.clone();
    deleted.remove(1);
    let broken = verify("run", &deleted).expect_err("deleted");
    assert_eq!(broken.position, 2);
    assert!(broken.reason.contains("deleted"), "{broken}");

    let mut reordered = records.clone();
    reordered.swap(1, 2);
    assert_eq!(verify("run", &reordered).map_err(|b| b.position), Err(2));

    // Re-hashing an edited record is caught by the next record's link.
    let mut rehashed = records.clone();
    rehashed[1].event = "{\"b\":20}".into();
    rehashed[1].hash = record_hash("run", 2, &rehashed[1].prev, &rehashed[1].event);
    let broken = verify("run", &rehashed).expect_err("rehashed");
    assert_eq!(broken.position, 3);

    // A cut tail is a shorter valid chain: the limit docs/audit.md states.
    assert_eq!(verify("run", &records[..2]), Ok(2));
}
