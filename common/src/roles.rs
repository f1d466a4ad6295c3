//! The roles a person can have in the fleet (admin, operator, viewer), how they are spelled and parsed, and the systems a person is scoped to: one home for the rule the CLI pre-checks and the controller enforces.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// What a person may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads systems, datasets, snapshots, tasks, runs, connections and
    /// alerts of its systems; watches runs.
    Viewer,
    /// A viewer that also runs, cancels, enables and changes tasks and
    /// takes snapshots, on its systems.
    Operator,
    /// Everything, including users, tokens, system removal, SSH
    /// connections and the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("role: must be admin, operator or viewer, not '{}'", crate::echo::echo(.0))]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| RoleError(s.to_owned()))
    }
}

/// Why a user's scope is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("systems: an admin sees every system; give no --system for an admin")]
    AdminScoped,
    #[error("systems: name the systems this user may see (--system NAME) or give --all-systems")]
    Empty,
    #[error("systems: --all-systems and --system NAME exclude each other")]
    Both,
}

/// The scope rule: an admin sees every system; an operator or viewer sees
/// the systems named, or all of them when `all_systems`, never nothing.
pub fn check_scope(role: Role, systems: &[String], all_systems: bool) -> Result<(), ScopeError> {
    match (role, systems.is_empty(), all_systems) {
        (Role::Admin, false, _) => Err(ScopeError::AdminScoped),
        (Role::Admin, true, _) => Ok(()),
        (_, false, true) => Err(ScopeError::Both),
        (_, true, false) => Err(ScopeError::Empty),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_back_from_their_names_and_nothing_else() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "role: must be admin, operator or viewer, not 'root'"
        );
        assert!("Admin".parse::<Role>().is_err());
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn admins_see_everything_others_what_they_are_given() {
        let some = vec!["nas1".to_owned()];
        assert_eq!(check_scope(Role::Admin, &[], false), Ok(()));
        assert_eq!(check_scope(Role::Admin, &[], true), Ok(()));
        assert_eq!(
            check_scope(Role::Admin, &some, false),
            Err(ScopeError::AdminScoped)
        );
        for role in [Role::Operator, Role::Viewer] {
            assert_eq!(check_scope(role, &some, false), Ok(()));
            assert_eq!(check_scope(role, &[], true), Ok(()));
            assert_eq!(check_scope(role, &[], false), Err(ScopeError::Empty));
            assert_eq!(check_scope(role, &some, true), Err(ScopeError::Both));
        }
    }
}
