//! The rules a dataset or snapshot name obeys before it becomes a zfs argument: the shared rules of [`nasfleet_common::dataset_names`], and the rules of a set of snapshots taken together and of an incremental base.

// The name rules are shared with the controller and the CLI; re-exported
// here because every zfs argv builder checks them.
pub use nasfleet_common::dataset_names::{
    DatasetNameError, MAX_DATASET_NAME, check_snapshot_component, validate_dataset_name,
    validate_snapshot_component, validate_snapshot_name,
};

/// Checks a set of snapshots to be taken together: each name is valid, all
/// are in one pool (OpenZFS takes several snapshots atomically only within
/// a pool), and no dataset gets two of them (nor, when `recursive`, a
/// dataset and its descendant, which `-r` would snapshot twice).
pub(super) fn validate_snapshot_set(
    names: &[String],
    recursive: bool,
) -> Result<(), DatasetNameError> {
    let Some(first) = names.first() else {
        return Err(DatasetNameError::NoSnapshots);
    };
    let (first_dataset, _) = validate_snapshot_name(first)?;
    let pool_of = |dataset: &str| dataset.split('/').next().unwrap_or(dataset).to_owned();
    let pool = pool_of(first_dataset);
    let mut seen: Vec<(&str, &str)> = Vec::with_capacity(names.len());
    for name in names {
        let (dataset, _) = validate_snapshot_name(name)?;
        if pool_of(dataset) != pool {
            return Err(DatasetNameError::SeveralPools {
                first: first.clone(),
                other: name.clone(),
            });
        }
        let below = |upper: &str, lower: &str| {
            lower
                .strip_prefix(upper)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if let Some((earlier, _)) = seen
            .iter()
            .find(|(_, d)| *d == dataset || (recursive && (below(d, dataset) || below(dataset, d))))
        {
            return Err(DatasetNameError::Overlapping {
                first: (*earlier).to_owned(),
                other: name.clone(),
            });
        }
        seen.push((name, dataset));
    }
    Ok(())
}

/// Checks an incremental base: `@short` (a snapshot of the sent dataset),
/// `#short` (a bookmark of it), a full `dataset@snapshot` name (e.g. a
/// clone's origin) or a full `dataset#bookmark` name.
pub(super) fn validate_incremental_base(base: &str) -> Result<(), DatasetNameError> {
    if let Some(short) = base.strip_prefix('@').or_else(|| base.strip_prefix('#')) {
        return check_snapshot_component(short, base);
    }
    if base.contains('#') {
        return validate_bookmark_name(base);
    }
    validate_snapshot_name(base).map(|_| ())
}

/// Checks a full bookmark name `dataset#bookmark`: a valid dataset, one
/// '#', and after it what a snapshot name allows.
pub(super) fn validate_bookmark_name(name: &str) -> Result<(), DatasetNameError> {
    let not_a_bookmark = || DatasetNameError::NotABookmark {
        name: name.to_owned(),
    };
    let (dataset, short) = name.split_once('#').ok_or_else(not_a_bookmark)?;
    if short.contains('#') || dataset.contains('@') {
        return Err(not_a_bookmark());
    }
    validate_dataset_name(dataset)?;
    check_snapshot_component(short, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_dataset_names() {
        for name in ["tank", "tank/a", "tank/a-b/c_d.e:f", "t1/2/3", "Pool/-x"] {
            assert_eq!(validate_dataset_name(name), Ok(()), "{name}");
        }
        assert_eq!(
            validate_dataset_name(&format!("t/{}", "a".repeat(253))),
            Ok(())
        );
    }

    #[test]
    fn refuses_hostile_dataset_names() {
        let hostile = [
            "",
            "-rf",
            "-",
            "a;b",
            "a/../b",
            "a/./b",
            "..",
            "$(x)",
            "tank/$(x)",
            "a b",
            " tank",
            "tank/",
            "/tank",
            "tank//a",
            "1tank",
            "_tank",
            "tank@snap",
            "tank#bm",
            "tank/a\nb",
            "tank\t",
            "tank/`id`",
            "tank/a|b",
            "tank/a'b",
            "tank/ä",
            "tank\\a",
        ];
        for name in hostile {
            assert!(
                validate_dataset_name(name).is_err(),
                "{name:?} was accepted"
            );
        }
        // zfs allows spaces below the pool; they travel as data.
        assert_eq!(validate_dataset_name("tank/a b/c d"), Ok(()));
        assert_eq!(
            validate_dataset_name("-rf"),
            Err(DatasetNameError::BadStart { name: "-rf".into() })
        );
        assert_eq!(
            validate_dataset_name("a;b"),
            Err(DatasetNameError::BadCharacter {
                name: "a;b".into(),
                bad: ';'
            })
        );
        assert!(matches!(
            validate_dataset_name("a/../b"),
            Err(DatasetNameError::DotComponent { .. })
        ));
        assert!(matches!(
            validate_dataset_name(&format!("t/{}", "a".repeat(254))),
            Err(DatasetNameError::TooLong { .. })
        ));
        let msg = validate_dataset_name("a b").unwrap_err().to_string();
        assert_eq!(
            msg,
            "dataset name 'a b' contains ' '; only letters, digits, '_', '.', ':', '-', spaces (not in the pool name) and '/' between components are allowed"
        );
    }

    #[test]
    fn snapshot_names_are_checked() {
        assert_eq!(
            validate_snapshot_name("tank/a@auto-2026-01-01_00-00"),
            Ok(("tank/a", "auto-2026-01-01_00-00"))
        );
        assert_eq!(validate_snapshot_name("tank@a b"), Ok(("tank", "a b")));
        assert_eq!(validate_snapshot_component("x:y.z_1-2 3"), Ok(()));
        for bad in [
            "tank/a",
            "tank",
            "",
            "tank/a@",
            "tank/a@.",
            "tank/a@..",
            "tank/a@x@y",
            "tank/a@x/y",
            "tank/a@x;y",
            "tank/a@$(id)",
            "tank/a@x\ny",
            "tank/a@x%y",
            "tank/a@x#y",
            "tank/a@x'y",
            "tank/a@ä",
            "-rf@x",
            "tank/../a@x",
            "@x",
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            validate_snapshot_name("tank/a").unwrap_err().to_string(),
            "'tank/a' is not a snapshot name (dataset@snapshot)"
        );
        assert_eq!(
            validate_snapshot_name("tank/a@x/y")
                .unwrap_err()
                .to_string(),
            "snapshot name 'tank/a@x/y' contains '/'; after '@' only letters, digits, spaces, '_', '.', ':' and '-' are allowed"
        );
        assert_eq!(
            validate_snapshot_component("x@y"),
            Err(DatasetNameError::SnapshotBadCharacter {
                name: "x@y".into(),
                bad: '@'
            })
        );
        let long = format!("tank/{}@{}", "a".repeat(199), "b".repeat(50));
        assert!(validate_snapshot_name(&long).is_ok());
        assert!(matches!(
            validate_snapshot_name(&format!("{long}b")),
            Err(DatasetNameError::TooLong { .. })
        ));
    }
}
