//! What each Fleet request is about, in the words the audit log uses for a refused call: names the caller sent (echoed, clipped), never a secret.

use crate::auth::Subject;
use nasfleet_common::echo::echo;
use nasfleet_proto::v1 as pb;

/// Requests about nothing in particular (lists, new join tokens).
macro_rules! about_nothing {
    ($($request:ty),* $(,)?) => {
        $(impl Subject for $request {
            fn subject(&self) -> String {
                String::new()
            }
        })*
    };
}

about_nothing!(
    pb::CreateTokenRequest,
    pb::ListSystemsRequest,
    pb::ListTasksRequest,
    pb::ListSshConnectionsRequest,
    pb::ListUsersRequest,
    pb::ListAuditRequest,
    pb::ListAlertsRequest,
    pb::ListChannelsRequest,
);

pub(crate) fn channel(name: &str) -> String {
    format!("notification channel '{}'", echo(name))
}

impl Subject for pb::AddChannelRequest {
    fn subject(&self) -> String {
        channel(&self.name)
    }
}

impl Subject for pb::ChannelRef {
    fn subject(&self) -> String {
        channel(&self.name)
    }
}

pub(crate) fn system(name: &str) -> String {
    format!("system '{}'", echo(name))
}

pub(crate) fn task(reference: &str) -> String {
    match reference {
        "" => "a new task".to_owned(),
        reference => format!("task '{}'", echo(reference)),
    }
}

pub(crate) fn user(name: &str) -> String {
    format!("user '{}'", echo(name))
}

impl Subject for pb::GetSystemRequest {
    fn subject(&self) -> String {
        system(&self.name)
    }
}

impl Subject for pb::RemoveSystemRequest {
    fn subject(&self) -> String {
        system(&self.name)
    }
}

impl Subject for pb::CreateSnapshotRequest {
    fn subject(&self) -> String {
        format!(
            "snapshot of '{}' on {}",
            echo(&self.dataset),
            system(&self.system)
        )
    }
}

impl Subject for pb::ListSnapshotsRequest {
    fn subject(&self) -> String {
        system(&self.system)
    }
}

impl Subject for pb::ListDatasetsRequest {
    fn subject(&self) -> String {
        system(&self.system)
    }
}

impl Subject for pb::TaskSpec {
    fn subject(&self) -> String {
        task("")
    }
}

impl Subject for pb::UpdateTaskRequest {
    fn subject(&self) -> String {
        task(&self.task)
    }
}

impl Subject for pb::TaskRef {
    fn subject(&self) -> String {
        task(&self.task)
    }
}

impl Subject for pb::SetTaskEnabledRequest {
    fn subject(&self) -> String {
        task(&self.task)
    }
}

impl Subject for pb::ListRunsRequest {
    fn subject(&self) -> String {
        match self.task.as_str() {
            "" => String::new(),
            reference => task(reference),
        }
    }
}

impl Subject for pb::RunRef {
    fn subject(&self) -> String {
        format!("run {}", self.id)
    }
}

impl Subject for pb::SshConnectionRef {
    fn subject(&self) -> String {
        format!(
            "SSH connection '{}' -> '{}'",
            echo(&self.source),
            echo(&self.target)
        )
    }
}

impl Subject for pb::CreateUserRequest {
    fn subject(&self) -> String {
        user(&self.name)
    }
}

impl Subject for pb::CreateUserTokenRequest {
    fn subject(&self) -> String {
        user(&self.name)
    }
}

impl Subject for pb::UserRef {
    fn subject(&self) -> String {
        user(&self.name)
    }
}

impl Subject for pb::UpdateUserRequest {
    fn subject(&self) -> String {
        user(&self.name)
    }
}

impl Subject for pb::ConsoleLinkRequest {
    fn subject(&self) -> String {
        "console sign-in link".into()
    }
}

impl Subject for pb::SetUserPasswordRequest {
    fn subject(&self) -> String {
        user(&self.name)
    }
}

impl Subject for pb::AlertRef {
    fn subject(&self) -> String {
        format!("alert {}", self.id)
    }
}
