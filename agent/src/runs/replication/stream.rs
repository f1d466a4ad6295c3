//! Which stream a dataset is sent as (pure): OpenZFS's compact features when both ends run OpenZFS, raw for an encrypted source unless the task chose `--no-raw`, and the refusals where that cannot work, made before anything is sent.

use crate::zfs::{Dialect, Encryption, StreamFeatures, ZfsError};
use thiserror::Error;

/// Why an encrypted source cannot be sent as the task asks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamRefusal {
    #[error(
        "Dataset '{dataset}' is encrypted: it is sent raw so that the target keeps it encrypted, but the target's zfs (zfs-fuse) cannot receive raw streams; replicate it with --no-raw to send it decrypted"
    )]
    RawNotReceivable { dataset: String },
    #[error(
        "Dataset '{dataset}' is encrypted and its key is not loaded on the source: --no-raw sends it decrypted, which needs the key (zfs load-key); without --no-raw it is sent raw"
    )]
    KeyNotLoaded { dataset: String },
}

/// The features `dataset` is sent with: `-L -c -e` when both sides run
/// OpenZFS, `-w` when it is encrypted and `raw` (the task's default).
/// `encryption` is the source's (`None`: zfs-fuse, which has none).
pub fn features(
    dataset: &str,
    encryption: Option<Encryption>,
    raw: bool,
    source: Dialect,
    target: Dialect,
) -> Result<StreamFeatures, StreamRefusal> {
    let both_openzfs = source == Dialect::OpenZfs && target == Dialect::OpenZfs;
    let encrypted = encryption.is_some_and(|e| e.encrypted);
    if encrypted && raw && target != Dialect::OpenZfs {
        return Err(StreamRefusal::RawNotReceivable {
            dataset: dataset.to_owned(),
        });
    }
    if encrypted && !raw && !encryption.is_some_and(|e| e.key_loaded) {
        return Err(StreamRefusal::KeyNotLoaded {
            dataset: dataset.to_owned(),
        });
    }
    Ok(StreamFeatures {
        compact: both_openzfs,
        raw: encrypted && raw,
    })
}

/// Whether an incremental stream with `features` can continue the replica
/// `target_dataset` as it is (`target`: its encryption as listed; `None`:
/// not known, and zfs's own refusal will say it). zfs refuses a raw
/// stream on a replica received decrypted, and a decrypted one on a
/// replica that keeps ciphertext whose key is not loaded there.
pub fn check_replica(
    target_dataset: &str,
    features: StreamFeatures,
    target: Option<Encryption>,
) -> Result<(), ZfsError> {
    let Some(target) = target else {
        return Ok(());
    };
    let dataset = || target_dataset.to_owned();
    if features.raw && !target.encrypted {
        return Err(ZfsError::RawOntoDecrypted { dataset: dataset() });
    }
    if !features.raw && target.encrypted && !target.key_loaded {
        return Err(ZfsError::DecryptedOntoRaw { dataset: dataset() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCRYPTED: Encryption = Encryption {
        encrypted: true,
        key_loaded: true,
    };
    const LOCKED: Encryption = Encryption {
        encrypted: true,
        key_loaded: false,
    };
    const PLAIN: Encryption = Encryption {
        encrypted: false,
        key_loaded: false,
    };

    #[test]
    fn compact_between_openzfs_raw_for_encrypted_sources() {
        use Dialect::{Legacy, OpenZfs};
        let f = |enc, raw, s, t| features("tank/a", enc, raw, s, t);
        assert_eq!(
            f(Some(PLAIN), true, OpenZfs, OpenZfs),
            Ok(StreamFeatures {
                compact: true,
                raw: false
            })
        );
        assert_eq!(
            f(Some(LOCKED), true, OpenZfs, OpenZfs),
            Ok(StreamFeatures {
                compact: true,
                raw: true
            }),
            "a raw send needs no key"
        );
        assert_eq!(
            f(Some(ENCRYPTED), false, OpenZfs, OpenZfs),
            Ok(StreamFeatures {
                compact: true,
                raw: false
            })
        );
        assert_eq!(f(None, true, Legacy, Legacy), Ok(StreamFeatures::default()));
        assert_eq!(
            f(Some(PLAIN), true, OpenZfs, Legacy),
            Ok(StreamFeatures::default()),
            "zfs-fuse receives plain streams only"
        );
        assert!(matches!(
            f(Some(ENCRYPTED), true, OpenZfs, Legacy),
            Err(StreamRefusal::RawNotReceivable { .. })
        ));
        let refusal = f(Some(LOCKED), false, OpenZfs, OpenZfs).unwrap_err();
        assert!(
            refusal.to_string().contains("key is not loaded"),
            "{refusal}"
        );
    }

    #[test]
    fn a_replica_is_continued_only_by_a_stream_of_its_kind() {
        let raw = StreamFeatures {
            compact: true,
            raw: true,
        };
        let plain = StreamFeatures {
            compact: true,
            raw: false,
        };
        assert!(check_replica("b/a", raw, Some(LOCKED)).is_ok());
        assert!(check_replica("b/a", raw, None).is_ok());
        assert!(matches!(
            check_replica("b/a", raw, Some(PLAIN)),
            Err(ZfsError::RawOntoDecrypted { .. })
        ));
        assert!(matches!(
            check_replica("b/a", plain, Some(LOCKED)),
            Err(ZfsError::DecryptedOntoRaw { .. })
        ));
        // Encrypted by its parent on the target, key loaded: fine.
        assert!(check_replica("b/a", plain, Some(ENCRYPTED)).is_ok());
        assert!(check_replica("b/a", plain, Some(PLAIN)).is_ok());
    }
}
